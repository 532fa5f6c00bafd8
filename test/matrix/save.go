package matrix

import (
	"bytes"
	"os"
	"path/filepath"
)

// Save writes the results into dir: matrix.md (the markdown table),
// matrix.csv, and for each failing row its vhost-user trace as
// trace-<row id>.txt, which the row then names in its Trace field (set
// here). Trace files of earlier runs are removed first.
func Save(dir string, rows []Row) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "trace-*.txt"))
	for _, f := range old {
		os.Remove(f)
	}
	for i := range rows {
		r := &rows[i]
		r.Trace = ""
		if r.Pass {
			continue
		}
		r.Trace = "trace-" + r.ID() + ".txt"
		var b bytes.Buffer
		WriteTrace(&b, r.Events)
		if len(r.Events) == 0 {
			b.WriteString("(no vhost-user events: the frontend never connected)\n")
		}
		if err := os.WriteFile(filepath.Join(dir, r.Trace), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	var md, csv bytes.Buffer
	if err := WriteMarkdown(&md, rows); err != nil {
		return err
	}
	if err := WriteCSV(&csv, rows); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "matrix.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "matrix.csv"), csv.Bytes(), 0o644)
}
