package matrix

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/binaries"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/testpmd"
)

// requirePeers fails (never skips, but with -short) when a real frontend
// is missing: the reduced matrix is part of make e2e.
func requirePeers(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs real frontends; skipped with -short")
	}
	for _, b := range []string{testpmd.DefaultBinary, qemu.DefaultBinary} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found: install it (see .ci/run: apt-get install -y dpdk qemu-system-x86 busybox-static cpio): %v", b, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("the matrix needs root (DPDK without hugepages, QEMU memfd)")
	}
}

// expectFail are the rows of the reduced matrix that fail today, with
// what their Why must say. Every other row must pass.
//
// DPDK 22.11's virtio_user is a modern-only driver: when the backend does
// not offer VERSION_1 its feature negotiation fails, yet it starts the
// device anyway, without SET_FEATURES (and without SET_VRING_CALL), and
// uses the 12-byte header while vhostd, with no features acked, reads and
// writes the legacy 10-byte one. Frames still "cross" (each is shifted by
// two bytes, its destination garbled, and the two-port switch floods it
// to the other port), so only the acked features and the byte counters
// tell. The row fails, as it should: found by this matrix (docs/matrix.md).
var expectFail = map[string]string{
	"no-mrg_rxbuf+version_1-testpmd": "never sent SET_FEATURES",
}

// TestMatrixReduced runs the Reduced combinations with both frontends
// against vhostd built from this tree (with the race detector) and checks
// each row's verdict; the table is logged, failing rows' traces too.
func TestMatrixReduced(t *testing.T) {
	requirePeers(t)
	kernel, initrd := guestimage.ForTest(t)
	bin, err := binaries.Build("./daemon/cmd/vhostd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bin)
	combos, err := Select(DefaultCombinations(), Reduced)
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{Vhostd: filepath.Join(bin, "vhostd"), Kernel: kernel, Initrd: initrd, Frames: 1000, Pings: 2, Logf: t.Logf}
	var rows []Row
	for _, f := range Frontends {
		for _, c := range combos {
			row := r.Run(context.Background(), c, f)
			t.Logf("%s %s: pass=%v in %.0fs: %s", c.Name, f, row.Pass, row.Elapsed.Seconds(), row.Why)
			rows = append(rows, row)
		}
	}
	out := t.TempDir()
	if err := Save(out, rows); err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	WriteMarkdown(&md, rows)
	t.Logf("reduced matrix:\n%s", md.String())
	for i := range rows {
		row := &rows[i]
		want, failing := expectFail[row.ID()]
		switch {
		case failing && row.Pass:
			t.Errorf("%s passed; it was expected to fail (%s): has the frontend or vhostd changed? Update expectFail and docs/matrix.md", row.ID(), want)
		case failing && !strings.Contains(row.Why, want):
			t.Errorf("%s failed for another reason than expected (%s): %s", row.ID(), want, row.Why)
		case !failing && !row.Pass:
			var tr bytes.Buffer
			WriteTrace(&tr, row.Events)
			t.Errorf("%s failed: %s\ntrace:\n%s", row.ID(), row.Why, tr.String())
		}
	}
}
