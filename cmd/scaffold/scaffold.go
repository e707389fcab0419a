package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
)

const usage = `usage:
  scaffold executor NAME [-transport grpc|kafka|rest] [-dir DIR]
      write a new executor type NAME (lower-case words joined by '-', e.g.
      currency-converter) in executors/, with its unit test, and host it
  scaffold module PATH [-dir DIR]
      rename the Go module to PATH (e.g. github.com/acme/payments-executor)
      everywhere, then regenerate the generated code (make generate)`

// run runs one scaffold command with its arguments.
func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "executor":
		return runExecutor(args[1:], stdout)
	case "module":
		return runModule(args[1:], stdout)
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

// parseArgs parses flags placed before or after the one positional
// argument, which it returns.
func parseArgs(flags *flag.FlagSet, args []string, what string) (string, error) {
	flags.SetOutput(io.Discard)
	var positional []string
	for len(args) > 0 {
		if err := flags.Parse(args); err != nil {
			return "", fmt.Errorf("%w\n%s", err, usage)
		}
		args = flags.Args()
		if len(args) > 0 {
			positional, args = append(positional, args[0]), args[1:]
		}
	}
	if len(positional) != 1 {
		return "", fmt.Errorf("want exactly one %s, got %q\n%s", what, positional, usage)
	}
	return positional[0], nil
}

// typeName is an executor type a fork may name: lower-case words joined by
// '-', valid as the engine's id (domain.ValidID) and short enough to leave
// room for the service name and instance in executor ids.
var typeName = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`)

// scaffolded is what the templates of a new executor type need.
type scaffolded struct {
	Module    string // the module path
	Type      string // the executor type, e.g. currency-converter
	Package   string // its package, e.g. currencyconverter
	Transport string // executor.GRPC, executor.Kafka or executor.REST
}

var transports = map[string]string{"grpc": "executor.GRPC", "kafka": "executor.Kafka", "rest": "executor.REST"}

func runExecutor(args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("executor", flag.ContinueOnError)
	transport := flags.String("transport", "grpc", "grpc, kafka or rest: how the engine sends the type's tasks")
	dir := flags.String("dir", ".", "the module's root")
	name, err := parseArgs(flags, args, "executor type name")
	if err != nil {
		return err
	}
	if !typeName.MatchString(name) || len(name) > 64 {
		return fmt.Errorf("executor type %q: want lower-case letters and digits in words joined by '-', at most 64 characters (e.g. currency-converter)", name)
	}
	constant, ok := transports[*transport]
	if !ok {
		return fmt.Errorf("-transport %q: want grpc, kafka or rest", *transport)
	}
	modulePath, err := readModule(*dir)
	if err != nil {
		return err
	}
	s := scaffolded{Module: modulePath, Type: name, Package: strings.ReplaceAll(name, "-", ""), Transport: constant}
	pkgDir := filepath.Join(*dir, "executors", s.Package)
	if _, err := os.Stat(pkgDir); err == nil {
		return fmt.Errorf("%s exists already: executor type %s is there", pkgDir, name)
	}
	hostedPath := filepath.Join(*dir, "executors", "hosted.go")
	hosted, err := os.ReadFile(hostedPath)
	if err != nil {
		return fmt.Errorf("read the list of hosted types: %w", err)
	}
	listed, err := addToHosted(hosted, s)
	if err != nil {
		return fmt.Errorf("%s: %w", hostedPath, err)
	}
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		return err
	}
	for file, tmpl := range map[string]*template.Template{
		s.Package + ".go":      handlerTemplate,
		s.Package + "_test.go": testTemplate,
	} {
		if err := writeTemplate(filepath.Join(pkgDir, file), tmpl, s); err != nil {
			return err
		}
	}
	if err := os.WriteFile(hostedPath, listed, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `wrote executor type %[1]s:
  executors/%[2]s/%[2]s.go       the handler: its descriptor and Execute
  executors/%[2]s/%[2]s_test.go  its unit tests, through executortest
and added it to executors/hosted.go, the list of hosted types.

Next:
  1. write the real work in Execute (executors/%[2]s/%[2]s.go) and its tests;
  2. go test ./executors/%[2]s/
  3. make run, then:
     curl -s -XPOST localhost:8080/api/v1/tasks -d '{"executorType":"%[1]s","context":{"input":"hello"}}'
`, s.Type, s.Package)
	return nil
}

func writeTemplate(path string, tmpl *template.Template, s scaffolded) error {
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, s); err != nil {
		return err
	}
	src, err := format.Source(buf.Bytes())
	if err != nil {
		return fmt.Errorf("format %s: %w", path, err)
	}
	return os.WriteFile(path, src, 0o644)
}

// hostedMarker is the line of executors/hosted.go above which new types
// are listed.
const hostedMarker = "// go run ./cmd/scaffold executor NAME adds new types above this line."

// addToHosted adds the new type's package import and constructor to the
// list of hosted types, formatted.
func addToHosted(src []byte, s scaffolded) ([]byte, error) {
	at := bytes.Index(src, []byte(hostedMarker))
	if at < 0 {
		return nil, fmt.Errorf("no line %q to add the type above: add %s.New() to the list by hand", hostedMarker, s.Package)
	}
	lineStart := bytes.LastIndexByte(src[:at], '\n') + 1
	entry := "\t\t" + s.Package + ".New(),\n"
	src = append(src[:lineStart:lineStart], append([]byte(entry), src[lineStart:]...)...)

	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "hosted.go", src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	importPath := s.Module + "/executors/" + s.Package
	for _, decl := range file.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.IMPORT {
			continue
		}
		gen.Specs = append(gen.Specs, &ast.ImportSpec{Path: &ast.BasicLit{Kind: token.STRING, Value: strconv.Quote(importPath)}})
		if !gen.Lparen.IsValid() {
			gen.Lparen = gen.Pos()
		}
		var buf bytes.Buffer
		if err := format.Node(&buf, fset, file); err != nil {
			return nil, err
		}
		return format.Source(buf.Bytes()) // sorts the imports
	}
	return nil, errors.New("no import block")
}

func readModule(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("read go.mod (run scaffold at the module's root, or name it with -dir): %w", err)
	}
	path := modfile.ModulePath(data)
	if path == "" {
		return "", errors.New("go.mod names no module")
	}
	return path, nil
}

// generatedDir holds code generated from the .proto files: renaming the
// module there would corrupt the serialized descriptors it embeds, so it
// is regenerated instead.
const generatedDir = "internal/gen"

// renamed are the files, by extension or name, in which the module path is
// replaced as text.
var renamed = map[string]bool{
	".go": true, ".proto": true, ".md": true, ".mod": true, ".py": true, ".yaml": true, ".yml": true, ".Dockerfile": true,
	"Makefile": true, "Dockerfile": true, "run": true,
}

func runModule(args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("module", flag.ContinueOnError)
	dir := flags.String("dir", ".", "the module's root")
	generate := flags.Bool("generate", true, "run make generate afterwards (needs protoc)")
	newPath, err := parseArgs(flags, args, "module path")
	if err != nil {
		return err
	}
	if err := module.CheckPath(newPath); err != nil {
		return fmt.Errorf("module path %q: %w", newPath, err)
	}
	oldPath, err := readModule(*dir)
	if err != nil {
		return err
	}
	if oldPath == newPath {
		return fmt.Errorf("the module is %s already", newPath)
	}
	changed := 0
	err = filepath.WalkDir(*dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(*dir, path)
		if d.IsDir() {
			switch {
			case rel == ".git", rel == "bin", filepath.ToSlash(rel) == generatedDir:
				return filepath.SkipDir
			}
			return nil
		}
		if !renamed[filepath.Ext(path)] && !renamed[d.Name()] {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		replaced := bytes.ReplaceAll(data, []byte(oldPath), []byte(newPath))
		if bytes.Equal(replaced, data) {
			return nil
		}
		if filepath.Ext(path) == ".go" {
			if replaced, err = format.Source(replaced); err != nil {
				return fmt.Errorf("format %s: %w", rel, err)
			}
		}
		changed++
		return os.WriteFile(path, replaced, d.Type().Perm()|0o600)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "renamed module %s to %s in %d files\n", oldPath, newPath, changed)
	if !*generate {
		fmt.Fprintln(stdout, "not regenerated: run make generate (needs protoc) before make check-generate")
		return nil
	}
	return regenerate(*dir, stdout)
}

// regenerate runs make generate, which rebuilds internal/gen with the new
// go_package (and checks for protoc before it touches anything).
func regenerate(dir string, stdout io.Writer) error {
	cmd := exec.Command("make", "generate")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("make generate: %w\n%s\nthe module is renamed; internal/gen still carries the old module path in its descriptors, "+
			"which builds and runs but is stale: install protoc (Debian: protobuf-compiler) and run make generate", err, out.String())
	}
	fmt.Fprintf(stdout, "regenerated internal/gen and Wire's injectors (make generate)\n\nNext: make test, then commit.\n")
	return nil
}

var handlerTemplate = template.Must(template.New("handler").Parse(`// Package {{.Package}} is the {{.Type}} executor type.
package {{.Package}}

import (
	"context"

	"{{.Module}}/pkg/executor"
)

// Type is the executor type this package serves.
const Type = "{{.Type}}"

// Executor runs {{.Type}} tasks. It is stateless, so safe for concurrent
// use: the runtime runs up to its MaxConcurrentTasks at once.
type Executor struct{}

var _ executor.Executor = Executor{}

// New returns the executor, as the list of hosted types (executors.Hosted)
// takes it.
func New() Executor { return Executor{} }

// Descriptor declares {{.Type}} to the runtime and the engine.
func (Executor) Descriptor() executor.Descriptor {
	return executor.Descriptor{
		Type:               Type,
		CommunicationType:  {{.Transport}},
		MaxConcurrentTasks: 10,
		SupportedNodeTypes: []string{Type},
	}
}

// Execute runs one task: it reads the task's input variables from
// task.Context (executor.String, executor.Number) and returns its output
// with executor.Success. Bad input is a business failure, returned as a
// result (executor.Failure) rather than an error, so that the engine does
// not retry a task that cannot succeed. It watches ctx, which carries the
// task's deadline and the engine's cancellation.
func (Executor) Execute(ctx context.Context, task *executor.Task) (*executor.Result, error) {
	input, err := executor.String(task.Context, "input")
	if err != nil {
		return executor.Failure(executor.CodeInvalidInput, err.Error()), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return executor.Success(map[string]any{"output": input}), nil
}
`))

var testTemplate = template.Must(template.New("test").Parse(`package {{.Package}}

import (
	"testing"

	"{{.Module}}/pkg/executor"
	"{{.Module}}/pkg/executor/executortest"
)

func TestDescriptorIsValid(t *testing.T) {
	d := New().Descriptor().WithDefaults()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.Type != "{{.Type}}" {
		t.Fatalf("type %q, want {{.Type}}", d.Type)
	}
}

func TestExecuteAnswersItsInput(t *testing.T) {
	h := executortest.New(t, New())
	out := executortest.RequireCompleted(t, h.Run(map[string]any{"input": "hello"}))
	if out["output"] != "hello" {
		t.Fatalf("output %v, want hello", out["output"])
	}
}

func TestExecuteRefusesAMissingInput(t *testing.T) {
	h := executortest.New(t, New())
	executortest.RequireFailed(t, h.Run(map[string]any{}), executor.CodeInvalidInput)
}
`))
