package version

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkout is the build information go build records in a Git checkout.
func checkout() *debug.BuildInfo {
	return &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "example.com/svc", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef"},
			{Key: "vcs.time", Value: "2026-11-30T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
}

func TestStampedValuesWinOverTheToolchainsInformation(t *testing.T) {
	info := resolve("1.4.0", "feedface", "2026-12-05T17:00:00Z", checkout())
	assert.Equal(t, "1.4.0", info.Version)
	assert.Equal(t, "feedface", info.Commit)
	assert.Equal(t, "2026-12-05T17:00:00Z", info.BuildDate)
	assert.Equal(t, "go1.26.8", info.GoVersion)
}

func TestAnUnstampedBuildFallsBackToTheCheckoutsRevision(t *testing.T) {
	info := resolve("", "", "", checkout())
	assert.Equal(t, Unknown, info.Version, `"(devel)" is no version`)
	assert.Equal(t, "0123456789abcdef", info.Commit)
	assert.Equal(t, "2026-11-30T10:00:00Z", info.BuildDate)
	assert.True(t, info.Modified)

	installed := &debug.BuildInfo{Main: debug.Module{Path: "example.com/svc", Version: "v1.2.3"}}
	assert.Equal(t, "v1.2.3", resolve("", "", "", installed).Version, "a tagged go install knows its module version")
}

func TestNothingKnownIsReportedAsUnknownNeverBlank(t *testing.T) {
	info := resolve("", "", "", nil)
	assert.Equal(t, Info{Version: Unknown, Commit: Unknown, BuildDate: Unknown, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}, info)
}

func TestWritePrintsOneKeyValueLineEach(t *testing.T) {
	var b strings.Builder
	info := Info{Version: "1.4.0", Commit: "feedface", BuildDate: "2026-12-05T17:00:00Z", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64"}
	require.NoError(t, info.Write(&b, "executor"))
	assert.Equal(t, "executor\nversion: 1.4.0\ncommit: feedface (modified)\nbuild date: 2026-12-05T17:00:00Z\ngo: go1.26.8 linux/amd64\n", b.String())
}

func TestGetReadsTheLinkerVariables(t *testing.T) {
	// The test binary is not stamped; setting the variables stands for -X.
	saved := [3]string{Version, Commit, BuildDate}
	t.Cleanup(func() { Version, Commit, BuildDate = saved[0], saved[1], saved[2] })
	Version, Commit, BuildDate = "9.9.9", "c0ffee", "2026-12-01T00:00:00Z"
	info := Get()
	assert.Equal(t, "9.9.9", info.Version)
	assert.Equal(t, "c0ffee", info.Commit)
	assert.Equal(t, "2026-12-01T00:00:00Z", info.BuildDate)
}

func TestLogValueIsAGroupOfTheBuild(t *testing.T) {
	var b bytes.Buffer
	info := Info{Version: "1.4.0", Commit: "feedface", BuildDate: "2026-12-05T17:00:00Z", GoVersion: "go1.26.8"}
	slog.New(slog.NewJSONHandler(&b, nil)).Info("start", slog.Any("build", info))
	var line struct{ Build map[string]any }
	require.NoError(t, json.Unmarshal(b.Bytes(), &line), b.String())
	assert.Equal(t, map[string]any{"version": "1.4.0", "commit": "feedface", "build_date": "2026-12-05T17:00:00Z",
		"modified": false, "go": "go1.26.8"}, line.Build)
}
