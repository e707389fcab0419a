package images

import (
	"debug/buildinfo"
	"debug/elf"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The binaries under test are built by make images-check with
// scripts/build-static.sh, the Dockerfiles' build, into GAMELAN_IMAGES_BIN,
// stamped with the values of the other three variables. Without them (in
// make test) these tests are skipped: building two binaries does not
// belong in the default run.
const (
	binDirVariable    = "GAMELAN_IMAGES_BIN"
	versionVariable   = "GAMELAN_IMAGES_VERSION"
	commitVariable    = "GAMELAN_IMAGES_COMMIT"
	buildDateVariable = "GAMELAN_IMAGES_BUILD_DATE"
)

// stamp is what make images-check passed to the build script.
type stamp struct{ binDir, version, commit, buildDate string }

func builtBinaries(t *testing.T) stamp {
	t.Helper()
	s := stamp{os.Getenv(binDirVariable), os.Getenv(versionVariable), os.Getenv(commitVariable), os.Getenv(buildDateVariable)}
	if s.binDir == "" {
		t.Skipf("%s is not set: make images-check builds the binaries and runs this", binDirVariable)
	}
	require.True(t, s.version != "" && s.commit != "" && s.buildDate != "",
		"%s, %s and %s say what the binaries were stamped with", versionVariable, commitVariable, buildDateVariable)
	return s
}

// TestBinariesAreStatic: no program interpreter (the dynamic loader) and
// no shared library needed, so that the binary runs on distroless/static,
// which has neither; and stripped (-s), as the script asks.
func TestBinariesAreStatic(t *testing.T) {
	s := builtBinaries(t)
	for _, img := range images(t) {
		t.Run(img.binary, func(t *testing.T) {
			f, err := elf.Open(filepath.Join(s.binDir, img.binary))
			require.NoError(t, err)
			defer f.Close()
			for _, prog := range f.Progs {
				assert.NotEqual(t, elf.PT_INTERP, prog.Type, "a program interpreter means a dynamically linked binary")
				assert.NotEqual(t, elf.PT_DYNAMIC, prog.Type, "a dynamic section means shared libraries to load")
			}
			libs, err := f.ImportedLibraries()
			require.NoError(t, err)
			assert.Empty(t, libs, "DT_NEEDED libraries")
			assert.Nil(t, f.Section(".symtab"), "the symbol table is stripped (-ldflags -s)")
			for _, section := range f.Sections {
				assert.False(t, strings.HasPrefix(section.Name, ".debug_") || strings.HasPrefix(section.Name, ".zdebug_"),
					"DWARF is stripped (-ldflags -w): %s", section.Name)
			}
		})
	}
}

// TestBinariesCarryTheScriptsBuildSettings reads what the Go toolchain
// recorded in each binary: built without cgo, with -trimpath, and no
// version-control information (the stamps are the only source of the
// commit, inside Docker or out).
func TestBinariesCarryTheScriptsBuildSettings(t *testing.T) {
	s := builtBinaries(t)
	for _, img := range images(t) {
		t.Run(img.binary, func(t *testing.T) {
			info, err := buildinfo.ReadFile(filepath.Join(s.binDir, img.binary))
			require.NoError(t, err)
			settings := make(map[string]string)
			for _, setting := range info.Settings {
				settings[setting.Key] = setting.Value
				assert.False(t, strings.HasPrefix(setting.Key, "vcs."), "-buildvcs=false: no %s", setting.Key)
			}
			assert.Equal(t, "0", settings["CGO_ENABLED"])
			assert.Equal(t, "true", settings["-trimpath"])
			assert.Equal(t, info.Main.Path+strings.TrimPrefix(img.command, "."), info.Path, "the binary is the command the Dockerfile names")
			// With -trimpath the toolchain records no -ldflags (they may
			// hold paths): the stamps are checked through -version, and
			// -s -w through the ELF sections, below and above.
		})
	}
}

// TestBinariesPrintTheirStampWithVersion runs each binary with -version:
// it exits 0 and prints exactly what was stamped.
func TestBinariesPrintTheirStampWithVersion(t *testing.T) {
	s := builtBinaries(t)
	for _, img := range images(t) {
		t.Run(img.binary, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(s.binDir, img.binary), "-version")
			cmd.Env = []string{} // -version must need no configuration
			out, err := cmd.Output()
			require.NoError(t, err, "%s -version exits 0", img.binary)
			lines := strings.Split(string(out), "\n")
			require.GreaterOrEqual(t, len(lines), 5, string(out))
			assert.Equal(t, []string{img.binary, "version: " + s.version, "commit: " + s.commit, "build date: " + s.buildDate}, lines[:4])
			assert.Regexp(t, `^go: go1\.\d+`, lines[4])
		})
	}
}

// TestTheDockerContextBuilds copies the files a Docker build would send
// (the module less what .dockerignore leaves out) into an empty directory
// and runs the Dockerfile's build there, offline: the strongest check,
// short of Docker, that the context holds everything the build reads.
func TestTheDockerContextBuilds(t *testing.T) {
	s := builtBinaries(t)
	for _, img := range images(t) {
		t.Run(img.binary, func(t *testing.T) {
			rules := contextIgnore(t, img.dockerfile)
			context := t.TempDir()
			copyContext(t, rules, context)
			out := filepath.Join(t.TempDir(), img.binary)
			build := exec.Command("sh", "scripts/build-static.sh", img.command, out)
			build.Dir = context
			// The module cache already holds every dependency (make
			// images-check built them): no network, and no go.mod update.
			build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off",
				"VERSION="+s.version, "COMMIT="+s.commit, "BUILD_DATE="+s.buildDate)
			output, err := build.CombinedOutput()
			require.NoError(t, err, "the build from the Docker context fails:\n%s", output)
			_, err = os.Stat(out)
			assert.NoError(t, err)
		})
	}
}

// copyContext copies every file of the module that rules do not leave out.
func copyContext(t *testing.T, rules ignoreFile, to string) {
	t.Helper()
	copied := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		out := rules.excluded(filepath.ToSlash(rel))
		if d.IsDir() {
			// A directory left out is skipped (.git is large) unless a
			// "!" line could re-include a file inside it.
			if out && !rules.hasExceptions() {
				return filepath.SkipDir
			}
			return nil
		}
		if out || !d.Type().IsRegular() {
			return nil
		}
		copied++
		return copyFile(p, filepath.Join(to, rel))
	})
	require.NoError(t, err)
	require.Positive(t, copied)
}

func copyFile(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
