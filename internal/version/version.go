// Package version tells which build of a binary is running: its version,
// the commit it was built from and when, and the Go release that built it.
//
// Release builds are stamped by scripts/build-static.sh, the one build
// script of the Dockerfiles and CI, with the linker's -X flag:
//
//	-X <this package>.Version=1.4.0 -X <this package>.Commit=3f2c... -X <this package>.BuildDate=2026-12-05T17:00:00Z
//
// A binary built without stamping (go build, go run, make build) falls back
// to what the Go toolchain recorded in it: the module version (a tagged
// `go install` has one) and the version-control revision and time that
// `go build` records in a Git checkout. What neither source knows is
// reported as Unknown rather than left empty, so that a -version line or a
// registration never shows a blank.
package version

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
)

// Set by the linker (-ldflags "-X ..."); empty when the build was not stamped.
var (
	// Version is the build's version, e.g. 1.4.0 or a git describe string.
	Version string
	// Commit is the full revision the build was made from.
	Commit string
	// BuildDate is when the build was made, in RFC 3339 (UTC).
	BuildDate string
)

// Unknown stands for a value that neither stamping nor the Go toolchain's
// build information provides.
const Unknown = "unknown"

// Info describes one build.
type Info struct {
	Version   string
	Commit    string
	BuildDate string
	// Modified is true when the build came from a Git checkout with
	// uncommitted changes (known only from the toolchain's information).
	Modified bool
	// GoVersion is the Go release that built the binary, e.g. go1.26.8.
	GoVersion string
	// Platform is GOOS/GOARCH.
	Platform string
}

// Get returns the running binary's build information: the stamped values,
// each one missing filled in from the toolchain's build information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo() // absent only in binaries built without module support
	return resolve(Version, Commit, BuildDate, bi)
}

// resolve merges stamped values with the toolchain's build information; a
// stamped value always wins, because the build script knows the release
// (a tag, a CI build number) while the toolchain only knows the checkout.
func resolve(version, commit, date string, bi *debug.BuildInfo) Info {
	info := Info{Version: version, Commit: commit, BuildDate: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		// "(devel)" is what go build puts there for the main module: it
		// says nothing, so it does not count as a version.
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.time":
				if info.BuildDate == "" {
					info.BuildDate = s.Value
				}
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	for _, field := range []*string{&info.Version, &info.Commit, &info.BuildDate} {
		if *field == "" {
			*field = Unknown
		}
	}
	return info
}

// Write prints the build information for a -version flag, one "key: value"
// line each, under the program's name, e.g.
//
//	executor
//	version: 1.4.0
//	commit: 3f2c9a...
//	build date: 2026-12-05T17:00:00Z
//	go: go1.26.8 linux/amd64
func (i Info) Write(w io.Writer, program string) error {
	commit := i.Commit
	if i.Modified {
		commit += " (modified)"
	}
	_, err := fmt.Fprintf(w, "%s\nversion: %s\ncommit: %s\nbuild date: %s\ngo: %s %s\n",
		program, i.Version, commit, i.BuildDate, i.GoVersion, i.Platform)
	return err
}

// LogValue shows the build as a group of a log line, e.g. the service's
// start-up line: {"version":"1.4.0","commit":"3f2c...","build_date":...,"go":"go1.26.8"}.
func (i Info) LogValue() slog.Value {
	return slog.GroupValue(slog.String("version", i.Version), slog.String("commit", i.Commit),
		slog.String("build_date", i.BuildDate), slog.Bool("modified", i.Modified), slog.String("go", i.GoVersion))
}
