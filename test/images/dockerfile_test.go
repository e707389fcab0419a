// Package images checks the container images without a Docker engine: the
// Dockerfiles build only through scripts/build-static.sh, .dockerignore
// keeps everything the builds read, and (under make images-check, which
// builds the binaries with that script first) the binaries are static and
// stamped.
package images

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/config"
)

// root is the module's root, where the Dockerfiles and the build context are.
const root = "../.."

// image is one Dockerfile and the command it packages.
type image struct {
	dockerfile string // relative to root
	command    string // the package built, e.g. ./cmd/executor
	binary     string // its name, in /out of the build stage and / of the image
	ports      []string
}

// images lists both images. The executor's ports are its configuration's
// defaults, so that a changed default fails here until EXPOSE follows.
func images(t *testing.T) []image {
	return []image{
		{"Dockerfile", "./cmd/executor", "executor", []string{
			defaultOf(t, "GAMELAN_EXECUTOR_HTTP_PORT"), defaultOf(t, "GAMELAN_EXECUTOR_GRPC_PORT"), defaultOf(t, "GAMELAN_EXECUTOR_REST_PORT")}},
		{"devengine.Dockerfile", "./cmd/devengine", "devengine", []string{"8080", "9000", "9092"}},
	}
}

// defaultOf is a configuration variable's default value.
func defaultOf(t *testing.T, name string) string {
	t.Helper()
	for _, v := range config.Variables(config.GRPC{}, config.REST{}, config.Kafka{}) {
		if v.Name == name {
			return v.Default
		}
	}
	t.Fatalf("no configuration variable %s", name)
	return ""
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	keyword string // upper case: FROM, RUN, COPY...
	args    string
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from         string // the FROM line's arguments
	instructions []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions. It
// follows the parts of the format these Dockerfiles use: comment lines
// (parser directives like "# syntax=" are comments too), lines continued
// with a trailing backslash, and comments between continued lines.
func parseDockerfile(text string) []stage {
	var stages []stage
	var pending strings.Builder
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || (line == "" && pending.Len() == 0) {
			continue
		}
		if rest, continued := strings.CutSuffix(line, `\`); continued {
			pending.WriteString(rest + " ")
			continue
		}
		pending.WriteString(line)
		keyword, args, _ := strings.Cut(strings.Join(strings.Fields(pending.String()), " "), " ")
		pending.Reset()
		in := instruction{keyword: strings.ToUpper(keyword), args: args}
		if in.keyword == "FROM" {
			stages = append(stages, stage{from: args})
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
		}
	}
	return stages
}

// all returns the arguments of every instruction of the keyword.
func (s stage) all(keyword string) []string {
	var args []string
	for _, in := range s.instructions {
		if in.keyword == keyword {
			args = append(args, in.args)
		}
	}
	return args
}

// withoutFlags drops the leading --flag=value options of an instruction
// (RUN --mount=..., COPY --from=...).
func withoutFlags(args string) string {
	fields := strings.Fields(args)
	for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
		fields = fields[1:]
	}
	return strings.Join(fields, " ")
}

func readDockerfile(t *testing.T, name string) []stage {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(root, name))
	require.NoError(t, err)
	return parseDockerfile(string(text))
}

func TestParseDockerfileJoinsContinuationsAndSkipsComments(t *testing.T) {
	stages := parseDockerfile("# syntax=docker/dockerfile:1\nFROM a AS build\nRUN --mount=x \\\n    # a comment\n    make \\\n  all\n\nFROM b\nUSER me\n")
	require.Len(t, stages, 2)
	assert.Equal(t, "a AS build", stages[0].from)
	assert.Equal(t, []instruction{{"RUN", "--mount=x make all"}}, stages[0].instructions)
	assert.Equal(t, []string{"me"}, stages[1].all("USER"))
	assert.Equal(t, "make all", withoutFlags("--mount=x make all"))
}

// TestDockerfilesBuildOnlyThroughTheScript: each image's binary is built
// by scripts/build-static.sh and nothing else, so that make images-check,
// which checks that script's output, checks what the images hold.
func TestDockerfilesBuildOnlyThroughTheScript(t *testing.T) {
	for _, img := range images(t) {
		t.Run(img.dockerfile, func(t *testing.T) {
			stages := readDockerfile(t, img.dockerfile)
			require.Len(t, stages, 2, "a build stage and the image")
			build, final := stages[0], stages[1]
			assert.Regexp(t, `^(--platform=\$BUILDPLATFORM )?golang:1\.26 AS build$`, build.from)
			assert.Equal(t, "gcr.io/distroless/static-debian12:nonroot", final.from)

			want := "GOOS=$TARGETOS GOARCH=$TARGETARCH sh scripts/build-static.sh " + img.command + " /out/" + img.binary
			var scripted []string
			for _, run := range append(build.all("RUN"), final.all("RUN")...) {
				command := withoutFlags(run)
				if strings.Contains(command, "build-static.sh") {
					scripted = append(scripted, command)
				}
				for _, forbidden := range []string{"go build", "go install", "-ldflags", "CGO_ENABLED", "-trimpath"} {
					assert.NotContains(t, command, forbidden, "every build flag lives in scripts/build-static.sh")
				}
			}
			assert.Equal(t, []string{want}, scripted, "one RUN calls the script, and only for %s", img.command)

			args := strings.Fields(strings.Join(build.all("ARG"), " "))
			for _, arg := range []string{"VERSION", "COMMIT", "BUILD_DATE", "TARGETOS", "TARGETARCH"} {
				assert.Contains(t, args, arg, "the build stage declares ARG %s, which the script reads from the environment", arg)
			}

			assert.Equal(t, []string{"--from=build /out/" + img.binary + " /" + img.binary}, final.all("COPY"), "the image holds the binary alone")
			assert.Equal(t, []string{`["/` + img.binary + `"]`}, final.all("ENTRYPOINT"))
			assert.Equal(t, []string{"nonroot:nonroot"}, final.all("USER"))
			assert.ElementsMatch(t, img.ports, strings.Fields(strings.Join(final.all("EXPOSE"), " ")))

			labels := strings.Join(final.all("LABEL"), " ")
			for _, label := range []string{`org.opencontainers.image.version="$VERSION"`, `org.opencontainers.image.revision="$COMMIT"`, "org.opencontainers.image.source="} {
				assert.Contains(t, labels, label)
			}
			assert.True(t, slices.Contains(strings.Fields(strings.Join(final.all("ARG"), " ")), "VERSION"),
				"the image stage declares ARG VERSION again: build args do not cross stages")
		})
	}
}

// TestDevengineImageListensOnItsExposedPorts: the reference engine binds
// loopback unless told otherwise, so its image sets each address to every
// interface on the port it exposes.
func TestDevengineImageListensOnItsExposedPorts(t *testing.T) {
	final := readDockerfile(t, "devengine.Dockerfile")[1]
	env := strings.Join(final.all("ENV"), " ")
	for variable, port := range map[string]string{"DEVENGINE_HTTP_ADDR": "8080", "DEVENGINE_GRPC_ADDR": "9000", "DEVENGINE_KAFKA_ADDR": "9092"} {
		assert.Regexp(t, regexp.MustCompile(variable+`=0\.0\.0\.0:`+port+`\b`), env)
	}
}
