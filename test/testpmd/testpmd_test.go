package testpmd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The files in testdata are answers captured from dpdk-testpmd 22.11.11
// (Debian 12) through Cmd: a net_virtio_user frontend against DPDK's
// net_vhost backend, and the backend itself.

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParsePortStats(t *testing.T) {
	tests := []struct {
		file string
		want []PortStats
	}{
		{"stats_idle.txt", []PortStats{
			{Port: 0, HasRates: true},
			{Port: 1, HasRates: true},
		}},
		{"stats_closed_loop.txt", []PortStats{
			{Port: 0, RxPackets: 2349568, RxBytes: 140974080, TxPackets: 2350688, TxBytes: 141041280,
				HasRates: true, RxPPS: 1163659, RxBPS: 558556672, TxPPS: 1163643, TxBPS: 558548784},
			{Port: 1, RxPackets: 2349504, RxBytes: 140970240, TxPackets: 2350752, TxBytes: 141045120,
				HasRates: true, RxPPS: 1163627, RxBPS: 558541080, TxPPS: 1163643, TxBPS: 558548728},
		}},
		{"stats_backend.txt", []PortStats{
			{Port: 0, RxPackets: 2350784, RxBytes: 141047040, TxPackets: 2349888, TxBytes: 140993280, HasRates: true},
			{Port: 1, RxPackets: 2350848, RxBytes: 141050880, TxPackets: 2349856, TxBytes: 140991360, HasRates: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := ParsePortStats(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParsePortStatsNonZeroErrors(t *testing.T) {
	// Same layout as nic_stats_display() in testpmd 22.11, with every
	// counter different and wide numbers, without the throughput part.
	out := "\r\n  ######################## NIC statistics for port 3  ########################\r\n" +
		"  RX-packets: 12345678901 RX-missed: 2          RX-bytes:  740740734060\n" +
		"  RX-errors: 3\n" +
		"  RX-nombuf:  4         \n" +
		"  TX-packets: 5          TX-errors: 6          TX-bytes:  7\n" +
		"  ############################################################################\n"
	got, err := ParsePortStats(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []PortStats{{Port: 3, RxPackets: 12345678901, RxMissed: 2, RxBytes: 740740734060,
		RxErrors: 3, RxNombuf: 4, TxPackets: 5, TxErrors: 6, TxBytes: 7}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParsePortStatsErrors(t *testing.T) {
	for _, out := range []string{
		"",
		"Invalid port 7\n",
		"  ######################## NIC statistics for port 0  ########################\n  RX-packets: 1\n",
	} {
		if got, err := ParsePortStats(out); err == nil {
			t.Errorf("ParsePortStats(%q) = %+v, want an error", out, got)
		}
	}
}

func TestParseFwdStats(t *testing.T) {
	got, err := ParseFwdStats(readTestdata(t, "stop_rxonly_tx_first_3.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := []FwdStats{
		{Port: 0, RxPackets: 96, RxTotal: 96, TxPackets: 96, TxTotal: 96},
		{Port: 1, RxPackets: 96, RxTotal: 96, TxPackets: 96, TxTotal: 96},
		{Port: -1, RxPackets: 192, RxTotal: 192, TxPackets: 192, TxTotal: 192},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rxonly: got  %+v\nwant %+v", got, want)
	}

	got, err = ParseFwdStats(readTestdata(t, "stop_closed_loop.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want = []FwdStats{
		{Port: 0, RxPackets: 2349824, RxTotal: 2349824, TxPackets: 2350976, TxDropped: 864, TxTotal: 2351840},
		{Port: 1, RxPackets: 2349792, RxTotal: 2349792, TxPackets: 2351040, TxDropped: 832, TxTotal: 2351872},
		{Port: -1, RxPackets: 4699616, RxTotal: 4699616, TxPackets: 4702016, TxDropped: 1696, TxTotal: 4703712},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("closed loop: got  %+v\nwant %+v", got, want)
	}

	// The optional lines of fwd_stats_display(), and a counter wider than
	// its %-14 column, which leaves no space before the next label.
	out := "\n  ---------------------- Forward statistics for port 1  ----------------------\n" +
		"  RX-packets: 123456789012345RX-dropped: 2             RX-total: 123456789012347\n" +
		"  RX-error: 3\n" +
		"  RX-nombufs: 4             \n" +
		"  TX-packets: 5              TX-dropped: 6             TX-total: 11\n" +
		"  ----------------------------------------------------------------------------\n"
	got, err = ParseFwdStats(out)
	if err != nil {
		t.Fatal(err)
	}
	want = []FwdStats{{Port: 1, RxPackets: 123456789012345, RxDropped: 2, RxTotal: 123456789012347,
		RxErrors: 3, RxNombufs: 4, TxPackets: 5, TxDropped: 6, TxTotal: 11}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("synthetic: got  %+v\nwant %+v", got, want)
	}

	if _, err := ParseFwdStats(readTestdata(t, "stop_not_started.txt")); err == nil {
		t.Error("ParseFwdStats(not started) succeeded")
	}
}

func TestParsePortSummary(t *testing.T) {
	got := ParsePortSummary(readTestdata(t, "summary_frontend.txt"))
	want := []LinkState{
		{Port: 0, MAC: "02:00:00:00:00:0A", Name: "net_virtio_user0", Driver: "net_virtio_user", Up: true},
		{Port: 1, MAC: "02:00:00:00:00:0B", Name: "net_virtio_user1", Driver: "net_virtio_user", Up: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("frontend: got  %+v\nwant %+v", got, want)
	}
	got = ParsePortSummary(readTestdata(t, "summary_backend.txt"))
	want = []LinkState{
		{Port: 0, MAC: "56:48:4F:53:54:00", Name: "net_vhost0", Driver: "net_vhost", Up: true},
		{Port: 1, MAC: "56:48:4F:53:54:01", Name: "net_vhost1", Driver: "net_vhost", Up: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("backend: got  %+v\nwant %+v", got, want)
	}
	if n, ok := parseAvailablePorts(readTestdata(t, "summary_frontend.txt")); !ok || n != 2 {
		t.Errorf("parseAvailablePorts = %d, %v", n, ok)
	}
}

func TestCheckStarted(t *testing.T) {
	if err := checkStarted("start", readTestdata(t, "start_tx_first.txt")); err != nil {
		t.Errorf("start tx_first: %v", err)
	}
	if err := checkStarted("start", readTestdata(t, "start_already.txt")); err != ErrForwarding {
		t.Errorf("already started: %v", err)
	}
}

func bp(b bool) *bool { return &b }

func TestArgs(t *testing.T) {
	cfg := Config{
		Binary: "tp",
		Ports: []Port{
			{Socket: "/tmp/a.sock", MAC: "02:00:00:00:00:0a", MrgRxbuf: bp(false), InOrder: bp(true)},
			{Socket: "/tmp/b.sock", Server: true, PackedVQ: true, Queues: 2, QueueSize: 1024, Extra: "vectorized=1"},
		},
		FilePrefix:  "fe",
		CPUs:        "1",
		ForwardMode: "mac",
		PeerMACs:    []string{"02:00:00:00:00:0b", ""},
		TxPkts:      60,
		Burst:       64,
		ExtraArgs:   []string{"--nb-cores=1"},
	}
	got, err := cfg.Args()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tp", "--lcores", "0@1,1@1", "--main-lcore", "0",
		"--no-huge", "-m", "1024", "--no-pci", "--no-shconf", "--file-prefix=fe",
		"--vdev", "net_virtio_user0,path=/tmp/a.sock,mac=02:00:00:00:00:0a,mrg_rxbuf=0,in_order=1",
		"--vdev", "net_virtio_user1,path=/tmp/b.sock,server=1,packed_vq=1,queues=2,queue_size=1024,vectorized=1",
		"--", "-i", "--no-mlockall", "--forward-mode=mac", "--eth-peer=0,02:00:00:00:00:0b",
		"--rxq=2", "--txq=2", "--txpkts=60", "--burst=64", "--total-num-mbufs=16384", "--nb-cores=1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}

	be := VhostBackendConfig("1", "/tmp/a.sock", "/tmp/b.sock")
	be.FilePrefix = "be"
	got, err = be.Args()
	if err != nil {
		t.Fatal(err)
	}
	want = []string{DefaultBinary, "--lcores", "0@1,1@1", "--main-lcore", "0",
		"--no-huge", "-m", "1024", "--no-pci", "--no-shconf", "--file-prefix=be",
		"--vdev", "net_vhost0,iface=/tmp/a.sock", "--vdev", "net_vhost1,iface=/tmp/b.sock",
		"--", "-i", "--no-mlockall", "--forward-mode=io", "-a", "--total-num-mbufs=16384"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("backend: got  %q\nwant %q", got, want)
	}

	// Default file prefixes differ between instances.
	a, _ := Config{Ports: []Port{{Socket: "/x"}}}.Args()
	b, _ := Config{Ports: []Port{{Socket: "/x"}}}.Args()
	if a[10] == b[10] || !strings.HasPrefix(a[10], "--file-prefix=vhostd-tp-") {
		t.Errorf("default prefixes %q and %q", a[10], b[10])
	}

	for _, bad := range []Config{
		{},
		{Ports: []Port{{}}},
		{Ports: []Port{{Socket: "/a,b"}}},
		{Ports: []Port{{Socket: "/a", MAC: "zz"}}},
		{Ports: []Port{{Socket: "/a"}}, PeerMACs: []string{"1", "2"}},
		{Ports: []Port{{Socket: "/a"}}, Burst: 513},
	} {
		if _, err := bad.Args(); err == nil {
			t.Errorf("Args(%+v) succeeded", bad)
		}
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := Start(context.Background(), Config{Binary: "dpdk-testpmd-does-not-exist", Ports: []Port{{Socket: "/x"}}})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Start with a missing binary: %v", err)
	}
}

// fakeTestpmd writes a shell script that talks like testpmd's interactive
// mode on a pipe: prompt, echo of the command with "\r\n", canned answers.
func fakeTestpmd(t *testing.T, ports int, preamble string) string {
	t.Helper()
	dir := t.TempDir()
	stats, err := filepath.Abs(filepath.Join("testdata", "stats_closed_loop.txt"))
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
echo "EAL: Detected CPU lcores: 2"
%s
echo "Interactive-mode selected" >&2
printf 'testpmd> '
while IFS= read -r line; do
	printf '%%s\r\n' "$line"
	case "$line" in
	"show port summary all")
		echo "Number of available ports: %d"
		echo "Port MAC Address       Name         Driver         Status   Link";;
	"show port stats all") cat %q;;
	"sleep") sleep 1; echo slept;;
	"say prompt") echo "text testpmd> inside";;
	quit) echo; echo "Bye..."; exit 0;;
	*) echo "Command not found";;
	esac
	printf 'testpmd> '
done
echo "stdin closed"
`, preamble, ports, stats)
	p := filepath.Join(dir, "fake-testpmd")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFakeSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := filepath.Join(t.TempDir(), "log")
	tp, err := Start(ctx, Config{
		Binary:  fakeTestpmd(t, 2, ""),
		Ports:   []Port{{Socket: "/x/a"}, {Socket: "/x/b"}},
		LogFile: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()

	st, err := tp.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[1].RxPackets != 2349504 {
		t.Errorf("stats %+v", st)
	}
	if _, err := tp.Cmd(ctx, "nonsense"); err == nil {
		t.Error("nonsense: no error")
	} else if _, ok := err.(*CmdError); !ok {
		t.Errorf("nonsense: %T %v", err, err)
	}
	out, err := tp.Cmd(ctx, "say prompt")
	if err != nil || out != "text testpmd> inside\n" {
		t.Errorf("say prompt: %q %v", out, err)
	}
	// An abandoned command: the next one skips its late answer.
	sctx, scancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = tp.Cmd(sctx, "sleep")
	scancel()
	if err == nil {
		t.Error("sleep: no timeout")
	}
	st, err = tp.Stats(ctx)
	if err != nil || len(st) != 2 {
		t.Errorf("stats after an abandoned command: %+v %v", st, err)
	}
	if _, err := tp.Cmd(ctx, "a\nb"); err == nil {
		t.Error("a command with a newline was accepted")
	}
	if err := tp.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := tp.Cmd(ctx, "show port stats all"); err == nil {
		t.Error("Cmd after Close succeeded")
	}
	b, _ := os.ReadFile(log)
	if !strings.Contains(string(b), "Bye...") || !strings.Contains(string(b), "Interactive-mode selected") {
		t.Errorf("log file lacks output:\n%s", b)
	}
}

func TestFakeMissingPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bin := fakeTestpmd(t, 1, `echo "vhost_user_setup(): connect error, No such file or directory"
echo "vdev_probe(): failed to initialize net_virtio_user1 device"`)
	_, err := Start(ctx, Config{Binary: bin, Ports: []Port{{Socket: "/x/a"}, {Socket: "/x/b"}}})
	if err == nil {
		t.Fatal("Start succeeded with a port missing")
	}
	for _, s := range []string{"1 of 2 ports", "connect error", "failed to initialize net_virtio_user1"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, err)
		}
	}
}

func TestFakeEarlyExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake")
	os.WriteFile(bin, []byte("#!/bin/sh\necho 'EAL: Error - exiting with code: 1'\necho '  Cause: No cores defined for forwarding'\nexit 1\n"), 0o755)
	_, err := Start(ctx, Config{Binary: bin, Ports: []Port{{Socket: "/x/a"}}})
	if err == nil || !strings.Contains(err.Error(), "No cores defined for forwarding") || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Start of an exiting testpmd: %v", err)
	}
}
