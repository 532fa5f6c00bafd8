package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Pooling: --pool takes the reps.csv of earlier runs (of the same build,
// on the same machine) and adds their successful repetitions to this
// run's, case by case (matched by name), so the medians and the
// confidence intervals are over all of them. Each run interleaves its
// backends (their order rotates every repetition), so every run's
// repetitions met the same noise on every backend; pooling runs keeps
// that. Pooled repetitions carry their rate and cost; no samples, idle
// CPU or other load.

// ReadRepsCSV reads the successful repetitions of a reps.csv written by
// WriteRepsCSV whose case is in cases (by Case.Name). Unknown cases are
// counted in skipped.
func ReadRepsCSV(r io.Reader, cases []Case) (out []RepResult, skipped int, err error) {
	recs, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, 0, err
	}
	if len(recs) == 0 {
		return nil, 0, fmt.Errorf("empty file")
	}
	idx := map[string]int{}
	for i, h := range recs[0] {
		idx[h] = i
	}
	for _, need := range []string{"backend", "case", "mpps", "error"} {
		if _, ok := idx[need]; !ok {
			return nil, 0, fmt.Errorf("no column %q: not a reps.csv", need)
		}
	}
	get := func(rec []string, col string) string {
		if i, ok := idx[col]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	byName := map[string]Case{}
	for _, c := range cases {
		byName[c.Name()] = c
	}
	for _, rec := range recs[1:] {
		if get(rec, "error") != "" || get(rec, "mpps") == "" {
			continue
		}
		c, ok := byName[get(rec, "case")]
		if !ok {
			skipped++
			continue
		}
		mpps, err := strconv.ParseFloat(get(rec, "mpps"), 64)
		if err != nil {
			return nil, 0, fmt.Errorf("mpps %q: %w", get(rec, "mpps"), err)
		}
		rr := RepResult{Backend: get(rec, "backend"), Case: c, Rep: 0, PPS: mpps * 1e6, OtherLoad: nan(), XCoreNs: nan(),
			GenDrops: -1, BackendDrops: -1, Pooled: true}
		if v, err := strconv.ParseFloat(get(rec, "xcore_rtt_ns"), 64); err == nil {
			rr.XCoreNs = v // absent from files of older benches
		}
		if v, err := strconv.ParseFloat(get(rec, "other_load_pct"), 64); err == nil {
			rr.OtherLoad = v
		}
		cyc, err1 := strconv.ParseUint(get(rec, "cycles"), 10, 64)
		fr, err2 := strconv.ParseUint(get(rec, "frames"), 10, 64)
		if err1 == nil && err2 == nil && fr > 0 {
			hz, _ := strconv.ParseFloat(get(rec, "tsc_hz"), 64)
			rr.Cost = &Cost{Cycles: cyc, Frames: fr, TSCHz: hz}
		}
		out = append(out, rr)
	}
	return out, skipped, nil
}

// PoolFiles reads every file's repetitions (ReadRepsCSV).
func PoolFiles(files []string, cases []Case) ([]RepResult, string, error) {
	var all []RepResult
	skipped := 0
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, "", fmt.Errorf("--pool: %w", err)
		}
		rs, sk, err := ReadRepsCSV(fh, cases)
		fh.Close()
		if err != nil {
			return nil, "", fmt.Errorf("--pool %s: %w", f, err)
		}
		all = append(all, rs...)
		skipped += sk
	}
	note := fmt.Sprintf("pooled %d repetition(s) from %d earlier run(s) (--pool)", len(all), len(files))
	if skipped > 0 {
		note += fmt.Sprintf("; %d of cases not measured in this run left out", skipped)
	}
	return all, note, nil
}
