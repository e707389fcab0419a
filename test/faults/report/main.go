// Command report turns the outcomes the fault scenarios append to
// GAMELAN_FAULTS_REPORT (one JSON line each, see testkit.Outcome) into the
// Markdown table of RELIABILITY.md: one row per scenario, its latest run,
// with the command that reruns it.
//
//	go run ./test/faults/report bin/faults-report.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/gamelan-go/executor/test/testkit"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: report FILE.jsonl")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	defer f.Close()
	rows, err := read(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	write(os.Stdout, rows)
}

// read returns the latest outcome of each scenario, in file order of first
// appearance.
func read(r io.Reader) ([]testkit.Figures, error) {
	latest := make(map[string]int)
	var rows []testkit.Figures
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; scanner.Scan(); n++ {
		var f testkit.Figures
		if err := json.Unmarshal(scanner.Bytes(), &f); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		key := f.Package + " " + f.Test + " " + f.Scenario
		if i, ok := latest[key]; ok {
			rows[i] = f
			continue
		}
		latest[key] = len(rows)
		rows = append(rows, f)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Package < rows[j].Package })
	return rows, scanner.Err()
}

func write(w io.Writer, rows []testkit.Figures) {
	fmt.Fprintln(w, "| Scenario | Command | Tasks | Lost | Duplicates | Recovery | Notes |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---|")
	for _, f := range rows {
		test := f.Test
		if top, _, ok := strings.Cut(test, "/"); ok {
			test = top
		}
		long := ""
		if f.Long {
			long = testkit.LongVar + "=1 "
		}
		command := fmt.Sprintf("`%sgo test -race -run '^%s$' %s`", long, test, f.Package)
		recovery := "-"
		if f.RecoveryMS > 0 {
			recovery = fmt.Sprintf("%.1f s", float64(f.RecoveryMS)/1000)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %s | %s |\n",
			f.Scenario, command, f.Submitted, f.Lost, f.Duplicates, recovery, notes(f.Notes))
	}
}

// maxNotes is how many of a scenario's extra figures a row shows; the
// report file keeps them all.
const maxNotes = 6

// notes prints a scenario's scalar extra figures as "key value" pairs,
// sorted, at most maxNotes of them; figures that are lists or maps stay in
// the report file.
func notes(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		switch v.(type) {
		case float64, string, bool:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if len(parts) == maxNotes {
			parts = append(parts, fmt.Sprintf("(%d more)", len(keys)-maxNotes))
			break
		}
		v := m[k]
		if x, ok := v.(float64); ok && x != float64(int64(x)) {
			v = fmt.Sprintf("%.2f", x)
		}
		parts = append(parts, fmt.Sprintf("%s %v", k, v))
	}
	return strings.Join(parts, ", ")
}
