// Command vhostd-matrix runs the feature matrix (make matrix): vhostd,
// built from this tree, against DPDK's virtio_user (dpdk-testpmd) and
// against two Linux guests under QEMU, once per feature combination
// (test/matrix.DefaultCombinations). It prints the table as markdown and
// writes matrix.md, matrix.csv and the traces of failing rows into --out.
// It exits 1 if a row failed, 2 if it could not run at all. Run it from
// the module (it builds vhostd and the guest image there); needs root,
// dpdk-testpmd and qemu-system-x86_64.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/matrix"
)

func main() {
	out := flag.String("out", "build/matrix", "directory for matrix.md, matrix.csv and traces")
	only := flag.String("only", "", "comma-separated combinations to run (default: all)")
	frontends := flag.String("frontends", "testpmd,qemu", "comma-separated frontends")
	frames := flag.Int("frames", 2000, "frames each testpmd port sends per frame size (60 and 1500 B)")
	pings := flag.Int("pings", 3, "pings per size and direction (QEMU)")
	list := flag.Bool("list", false, "list the combinations and exit")
	allTraces := flag.Bool("all-traces", false, "save the trace of passing rows too (alltrace-<row>.txt)")
	flag.Parse()

	all := matrix.DefaultCombinations()
	if *list {
		for _, c := range all {
			fmt.Printf("%-32s %s\n", c.Name, c.Why)
		}
		return
	}
	combos := all
	if *only != "" {
		var err error
		if combos, err = matrix.Select(all, strings.Split(*only, ",")); err != nil {
			fatal(err)
		}
	}
	var fes []matrix.Frontend
	for _, f := range strings.Split(*frontends, ",") {
		switch fe := matrix.Frontend(strings.TrimSpace(f)); fe {
		case matrix.Testpmd, matrix.QEMU:
			fes = append(fes, fe)
		default:
			fatal(fmt.Errorf("unknown frontend %q (testpmd, qemu)", f))
		}
	}

	r := &matrix.Runner{Frames: *frames, Pings: *pings,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}
	bin, err := os.MkdirTemp("", "vhostd-matrix-bin")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(bin)
	build := exec.Command("go", "build", "-o", bin+"/", "./daemon/cmd/vhostd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fatal(fmt.Errorf("build vhostd: %w", err))
	}
	r.Vhostd = filepath.Join(bin, "vhostd")
	for _, f := range fes {
		if f == matrix.QEMU {
			dir, err := guestimage.DefaultDir()
			if err != nil {
				fatal(err)
			}
			if r.Kernel, r.Initrd, err = guestimage.Build(dir); err != nil {
				fatal(err)
			}
		}
	}

	var rows []matrix.Row
	start := time.Now()
	for _, f := range fes {
		for _, c := range combos {
			if !c.Runs(f) {
				continue
			}
			row := r.Run(context.Background(), c, f)
			res := "pass"
			if !row.Pass {
				res = "FAIL"
			}
			fmt.Fprintf(os.Stderr, "%-32s %-8s %s in %.0fs: %s\n", c.Name, f, res, row.Elapsed.Seconds(), row.Why)
			rows = append(rows, row)
			if *allTraces && row.Pass {
				if err := saveTrace(filepath.Join(*out, "alltrace-"+row.ID()+".txt"), row); err != nil {
					fatal(err)
				}
			}
			if err := matrix.Save(*out, rows); err != nil { // keep what was run if interrupted
				fatal(err)
			}
		}
	}
	if err := matrix.WriteMarkdown(os.Stdout, rows); err != nil {
		fatal(err)
	}
	fmt.Fprintf(os.Stderr, "matrix: %d rows in %s; written to %s\n", len(rows), time.Since(start).Round(time.Second), *out)
	for _, row := range rows {
		if !row.Pass {
			os.Exit(1)
		}
	}
}

func saveTrace(path string, row matrix.Row) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := matrix.WriteTrace(f, row.Events); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "vhostd-matrix:", err)
	os.Exit(2)
}
