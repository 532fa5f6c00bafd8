// Package testpmd drives DPDK's dpdk-testpmd in interactive mode, as a
// vhost-user FRONTEND (net_virtio_user ports: what a guest's virtio-net
// driver does, without a VM) and, for reference measurements, as DPDK's own
// vhost-user BACKEND (net_vhost ports, VhostBackendConfig). It is meant for
// end-to-end tests and benchmarks of vhostd.
//
// testpmd runs with --no-huge (see /work/shared/LAB.md); its stdin is a
// pipe carrying the commands and its stdout+stderr one pipe carrying the
// answers; a command's answer is everything up to the next "testpmd> "
// prompt. testpmd's stdio would block-buffer into a pipe (the answers then
// come long after the prompts), so it runs under coreutils' "stdbuf -o0
// -e0". testpmd quits when its stdin reaches EOF, and it gets SIGKILL as
// its parent-death signal (StartProcess), so it does not outlive a test
// binary or benchmark that dies, even one killed with SIGKILL while
// testpmd is blocked in a server-mode port probe.
//
// # Fixed frame counts
//
// testpmd 22.11 has no "send N frames" command, and txonly sends for as
// long as it runs. What works, measured with DPDK 22.11.11 against DPDK's
// net_vhost backend (io forwarding, port 0 <-> port 1), 256-entry rings:
//
//   - In forwarding mode "rxonly", "start tx_first N" first runs N rounds of
//     one txonly burst per forwarding stream (one stream per port), waiting
//     for each round, and only then starts the rxonly loop. So every port
//     transmits exactly N*B frames to its --eth-peer MAC (B from "set burst
//     B" or --burst, default 32) and afterwards only receives. Seen exact,
//     TX and RX on both ports, mrg_rxbuf 0 and 1: burst 32 x 1 = 32, 1 x 1
//     = 1, 7 x 3 = 21, 32 x 4 = 128, 32 x 8, 64 x 4, 128 x 2 and 256 x 1 =
//     256.
//   - "set burst B" takes 1..512 ("nb pkt per burst: 9999 > 512 ...
//     ignored" otherwise). Exactness ends at the ring size: nothing
//     receives while the tx_first rounds run, so what does not fit the
//     frontend's TX ring is dropped by testpmd (burst 512 x 1: 256 sent,
//     "TX-dropped: 256" in the stop statistics) and what does not fit the
//     peer's RX ring is dropped by the backend (32 x 64: 2016 sent per
//     port, 256 received).
//   - "stop" then prints per-port forward statistics (FwdStats) counted
//     from the start; "show port stats all" gives the ethdev counters
//     (PortStats) since "clear port stats all".
//   - "start" flushes the RX queues first (frames still in flight from
//     before are received and counted then).
//
// SendExact builds on this: rounds of at most 128 frames per port ("set
// burst R" + "start tx_first 1"), each waited for, so any count is exact.
package testpmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultBinary is the testpmd executable used when Config.Binary is empty.
const DefaultBinary = "dpdk-testpmd"

// Prompt is testpmd's interactive prompt.
const Prompt = "testpmd> "

// Port is one net_virtio_user vdev: a vhost-user frontend port.
type Port struct {
	// Socket is the vhost-user unix socket path (vdev "path=").
	Socket string
	// MAC is the port's MAC address (vdev "mac="); empty lets DPDK pick.
	MAC string
	// Server makes the frontend the socket server (vdev "server=1"), for a
	// backend in client mode. The default is client: the socket must exist.
	// testpmd 22.11 blocks in the probe of a server port until a client has
	// connected (ports in order: the next socket appears only then), so
	// Start returns only after the backend has connected to every server
	// port: start the backend first with client reconnection (DPDK's
	// net_vhost client=1 retries every second), or call Start in a
	// goroutine and start the backend once the first socket exists.
	Server bool
	// MrgRxbuf sets VIRTIO_NET_F_MRG_RXBUF on (true) or off (false); nil
	// keeps DPDK's default (on).
	MrgRxbuf *bool
	// InOrder sets VIRTIO_F_IN_ORDER on or off; nil keeps DPDK's default.
	InOrder *bool
	// PackedVQ asks for packed virtqueues (vdev "packed_vq=1").
	PackedVQ bool
	// Queues is the number of queue pairs (vdev "queues="); 0 means 1. When
	// any port has more than one, testpmd gets --rxq/--txq of the largest.
	Queues int
	// QueueSize is the ring size (vdev "queue_size="); 0 keeps DPDK's 256.
	QueueSize int
	// Extra is appended verbatim to the vdev string ("k=v,k=v").
	Extra string
}

// VhostPort is one net_vhost vdev: a port of DPDK's own vhost-user backend
// (rte_vhost), used as a reference peer.
type VhostPort struct {
	// Socket is the vhost-user unix socket path (vdev "iface=").
	Socket string
	// Client makes the backend connect to an existing socket (vdev
	// "client=1"); the default is server (it creates the socket).
	Client bool
	// Queues is the number of queue pairs (vdev "queues="); 0 means 1.
	Queues int
	// Extra is appended verbatim to the vdev string ("k=v,k=v").
	Extra string
}

// Config describes one dpdk-testpmd instance.
type Config struct {
	// Binary is the testpmd executable; default DefaultBinary (looked up
	// in PATH).
	Binary string
	// Ports become --vdev net_virtio_userN,... in order; their DPDK port ids
	// are 0..len(Ports)-1.
	Ports []Port
	// VhostPorts become --vdev net_vhostN,... after Ports; their port ids
	// follow those of Ports.
	VhostPorts []VhostPort
	// FilePrefix is the EAL --file-prefix. Default: unique per instance
	// ("vhostd-tp-PID-N"), so several testpmds can coexist.
	FilePrefix string
	// CPUs, when set, is a taskset CPU list ("0", "1", "0-1") the whole
	// process is confined to.
	CPUs string
	// Lcores is the EAL --lcores value. Default "0@C,1@C" where C is the
	// first CPU of CPUs (0 when CPUs is empty): the main lcore for the CLI
	// and one forwarding lcore, both on one CPU.
	Lcores string
	// MainLcore is the EAL --main-lcore (default 0).
	MainLcore int
	// MemoryMB is the EAL -m value (default 1024; no hugepages).
	MemoryMB int
	// ForwardMode is --forward-mode ("io", "mac", "rxonly", "txonly", ...);
	// empty keeps testpmd's default (io).
	ForwardMode string
	// AutoStart passes -a: forwarding starts right after startup.
	AutoStart bool
	// PeerMACs[i], when not empty, becomes --eth-peer=i,MAC: the
	// destination MAC of frames generated on port i (txonly, tx_first) and
	// of frames forwarded by port i in mac mode.
	PeerMACs []string
	// TxPkts, when > 0, is the generated frame length in bytes without
	// CRC (--txpkts=N; testpmd's default is 64).
	TxPkts int
	// Burst, when > 0, is --burst=N (frames per burst, 1..512; default 32).
	Burst int
	// TotalMbufs is --total-num-mbufs (default 16384).
	TotalMbufs int
	// ExtraEALArgs are added to the EAL arguments (before "--").
	ExtraEALArgs []string
	// ExtraArgs are added to the application arguments (after "--").
	ExtraArgs []string
	// LogFile, when set, receives the command line and all of testpmd's
	// output (appended).
	LogFile string
	// NoStdbuf runs testpmd without "stdbuf -o0 -e0". Answers may then lag
	// behind prompts; only for systems without coreutils' stdbuf.
	NoStdbuf bool
}

// TestPMD is a running dpdk-testpmd in interactive mode.
type TestPMD struct {
	cfg    Config
	args   []string
	proc   *exec.Cmd
	stdin  io.WriteCloser
	logf   *os.File // until readLoop takes it
	prefix string
	autoPf bool

	cmdMu   sync.Mutex // one command at a time
	pending int        // prompts still owed by commands abandoned on ctx

	mu       sync.Mutex
	buf      []byte // output not yet consumed by a command
	tail     []byte // last tailMax bytes of all output
	notify   chan struct{}
	readDone chan struct{}

	exited  chan struct{}
	waitErr error

	closeOnce sync.Once
	closeErr  error
}

const tailMax = 16 << 10

var instanceSeq atomic.Int64

// Args returns the command line (program and arguments) that Start runs for
// cfg, after defaults are applied.
func (cfg Config) Args() ([]string, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c.args(), nil
}

func (cfg Config) withDefaults() Config {
	c := cfg
	if c.Binary == "" {
		c.Binary = DefaultBinary
	}
	if c.FilePrefix == "" {
		c.FilePrefix = fmt.Sprintf("vhostd-tp-%d-%d", os.Getpid(), instanceSeq.Add(1))
	}
	if c.Lcores == "" {
		cpu := "0"
		if c.CPUs != "" {
			cpu = firstCPU(c.CPUs)
		}
		c.Lcores = fmt.Sprintf("0@%s,1@%s", cpu, cpu)
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 1024
	}
	if c.TotalMbufs == 0 {
		c.TotalMbufs = 16384
	}
	return c
}

func firstCPU(list string) string {
	s := strings.TrimSpace(list)
	if i := strings.IndexAny(s, ",-"); i >= 0 {
		s = s[:i]
	}
	return s
}

var macRe = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)

func (c Config) validate() error {
	if len(c.Ports)+len(c.VhostPorts) == 0 {
		return errors.New("testpmd: config has no ports")
	}
	for i, p := range c.Ports {
		if p.Socket == "" {
			return fmt.Errorf("testpmd: port %d: empty Socket", i)
		}
		if strings.ContainsAny(p.Socket, ", \t\n") {
			return fmt.Errorf("testpmd: port %d: socket path %q contains a comma or whitespace", i, p.Socket)
		}
		if p.MAC != "" && !macRe.MatchString(p.MAC) {
			return fmt.Errorf("testpmd: port %d: bad MAC %q", i, p.MAC)
		}
		if p.Queues < 0 || p.QueueSize < 0 {
			return fmt.Errorf("testpmd: port %d: negative Queues or QueueSize", i)
		}
	}
	for i, p := range c.VhostPorts {
		if p.Socket == "" {
			return fmt.Errorf("testpmd: vhost port %d: empty Socket", i)
		}
		if strings.ContainsAny(p.Socket, ", \t\n") {
			return fmt.Errorf("testpmd: vhost port %d: socket path %q contains a comma or whitespace", i, p.Socket)
		}
	}
	if len(c.PeerMACs) > len(c.Ports)+len(c.VhostPorts) {
		return fmt.Errorf("testpmd: %d PeerMACs for %d ports", len(c.PeerMACs), len(c.Ports)+len(c.VhostPorts))
	}
	for i, m := range c.PeerMACs {
		if m != "" && !macRe.MatchString(m) {
			return fmt.Errorf("testpmd: PeerMACs[%d]: bad MAC %q", i, m)
		}
	}
	if c.Burst < 0 || c.Burst > MaxBurst {
		return fmt.Errorf("testpmd: Burst %d out of range 1..%d", c.Burst, MaxBurst)
	}
	return nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// vdevs returns the --vdev values for the configured ports.
func (c Config) vdevs() []string {
	var out []string
	for i, p := range c.Ports {
		s := fmt.Sprintf("net_virtio_user%d,path=%s", i, p.Socket)
		if p.MAC != "" {
			s += ",mac=" + p.MAC
		}
		if p.Server {
			s += ",server=1"
		}
		if p.MrgRxbuf != nil {
			s += ",mrg_rxbuf=" + boolArg(*p.MrgRxbuf)
		}
		if p.InOrder != nil {
			s += ",in_order=" + boolArg(*p.InOrder)
		}
		if p.PackedVQ {
			s += ",packed_vq=1"
		}
		if p.Queues > 0 {
			s += fmt.Sprintf(",queues=%d", p.Queues)
		}
		if p.QueueSize > 0 {
			s += fmt.Sprintf(",queue_size=%d", p.QueueSize)
		}
		if p.Extra != "" {
			s += "," + strings.TrimPrefix(p.Extra, ",")
		}
		out = append(out, s)
	}
	for i, p := range c.VhostPorts {
		s := fmt.Sprintf("net_vhost%d,iface=%s", i, p.Socket)
		if p.Client {
			s += ",client=1"
		}
		if p.Queues > 0 {
			s += fmt.Sprintf(",queues=%d", p.Queues)
		}
		if p.Extra != "" {
			s += "," + strings.TrimPrefix(p.Extra, ",")
		}
		out = append(out, s)
	}
	return out
}

// args returns the testpmd argv (without taskset/stdbuf wrappers).
func (c Config) args() []string {
	a := []string{c.Binary,
		"--lcores", c.Lcores, "--main-lcore", strconv.Itoa(c.MainLcore),
		"--no-huge", "-m", strconv.Itoa(c.MemoryMB), "--no-pci", "--no-shconf",
		"--file-prefix=" + c.FilePrefix,
	}
	for _, v := range c.vdevs() {
		a = append(a, "--vdev", v)
	}
	a = append(a, c.ExtraEALArgs...)
	a = append(a, "--", "-i", "--no-mlockall")
	if c.ForwardMode != "" {
		a = append(a, "--forward-mode="+c.ForwardMode)
	}
	if c.AutoStart {
		a = append(a, "-a")
	}
	for i, m := range c.PeerMACs {
		if m != "" {
			a = append(a, fmt.Sprintf("--eth-peer=%d,%s", i, m))
		}
	}
	if q := c.queues(); q > 1 {
		a = append(a, fmt.Sprintf("--rxq=%d", q), fmt.Sprintf("--txq=%d", q))
	}
	if c.TxPkts > 0 {
		a = append(a, fmt.Sprintf("--txpkts=%d", c.TxPkts))
	}
	if c.Burst > 0 {
		a = append(a, fmt.Sprintf("--burst=%d", c.Burst))
	}
	a = append(a, fmt.Sprintf("--total-num-mbufs=%d", c.TotalMbufs))
	a = append(a, c.ExtraArgs...)
	return a
}

// Start runs testpmd for cfg and waits for its first prompt. It fails, with
// testpmd's output tail in the error, when testpmd exits, when ctx ends
// before the prompt (60 s when ctx has no deadline), or when not every
// configured port came up as a DPDK port (for example: a client-mode
// vhost-user socket is missing, or the backend refused the connection).
func Start(ctx context.Context, cfg Config) (*TestPMD, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(c.Binary)
	if err != nil {
		return nil, fmt.Errorf("testpmd: %s not found (install Debian's dpdk package: apt-get install -y dpdk): %w", c.Binary, err)
	}
	c.Binary = bin
	argv := c.args()
	if !c.NoStdbuf {
		sb, err := exec.LookPath("stdbuf")
		if err != nil {
			return nil, fmt.Errorf("testpmd: stdbuf (coreutils) not found, needed to unbuffer testpmd's output (or set NoStdbuf): %w", err)
		}
		argv = append([]string{sb, "-o0", "-e0"}, argv...)
	}
	if c.CPUs != "" {
		ts, err := exec.LookPath("taskset")
		if err != nil {
			return nil, fmt.Errorf("testpmd: taskset (util-linux) not found, needed for CPUs=%q: %w", c.CPUs, err)
		}
		argv = append([]string{ts, "-c", c.CPUs}, argv...)
	}

	t := &TestPMD{
		cfg:      c,
		args:     argv,
		prefix:   c.FilePrefix,
		autoPf:   cfg.FilePrefix == "",
		notify:   make(chan struct{}, 1),
		readDone: make(chan struct{}),
		exited:   make(chan struct{}),
	}
	if c.LogFile != "" {
		t.logf, err = os.OpenFile(c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("testpmd: log file: %w", err)
		}
		fmt.Fprintf(t.logf, "### %s %s\n", time.Now().Format(time.RFC3339), shellJoin(argv))
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		t.closeLog()
		return nil, err
	}
	proc := exec.Command(argv[0], argv[1:]...)
	proc.Stdout = pw
	proc.Stderr = pw
	// A process group of its own: Close can signal taskset, stdbuf and
	// testpmd together, and a Ctrl-C at the terminal reaches only the
	// test or bench, which then quits testpmd in order.
	proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := proc.StdinPipe()
	if err != nil {
		pr.Close()
		pw.Close()
		t.closeLog()
		return nil, err
	}
	// SIGKILL when this process dies: EOF on stdin alone does not stop a
	// testpmd still blocked in the probe of a server-mode port, nor one
	// busy forwarding until it next reads its command line.
	if err := StartProcess(proc, syscall.SIGKILL); err != nil {
		pr.Close()
		pw.Close()
		t.closeLog()
		return nil, fmt.Errorf("testpmd: start %s: %w", bin, err)
	}
	pw.Close()
	t.proc = proc
	t.stdin = stdin
	go t.readLoop(pr, t.logf)
	t.logf = nil // owned by readLoop now
	go func() {
		t.waitErr = proc.Wait()
		close(t.exited)
	}()

	sctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	if _, err := t.readUntilPrompt(sctx, true); err != nil {
		t.Close()
		return nil, fmt.Errorf("testpmd: waiting for the first prompt: %w\n%s", err, t.describeFailure())
	}
	// testpmd keeps going when a vdev fails to probe: check every port is
	// there.
	want := len(c.Ports) + len(c.VhostPorts)
	sum, err := t.Cmd(sctx, "show port summary all")
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("testpmd: show port summary: %w\n%s", err, t.describeFailure())
	}
	n, ok := parseAvailablePorts(sum)
	if !ok || n != want {
		t.Close()
		return nil, fmt.Errorf("testpmd: %d of %d ports came up (vhost-user socket missing, or the backend refused?)\n%s",
			n, want, t.describeFailure())
	}
	return t, nil
}

var availRe = regexp.MustCompile(`Number of available ports: (\d+)`)

func parseAvailablePorts(s string) (int, bool) {
	m := availRe.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// describeFailure summarises why startup failed: the port-related error
// lines, then the output tail.
func (t *TestPMD) describeFailure() string {
	tail := t.OutputTail()
	var b strings.Builder
	for _, l := range strings.Split(tail, "\n") {
		ll := strings.ToLower(l)
		if strings.Contains(ll, "virtio_user") || strings.Contains(ll, "vhost_user") ||
			strings.Contains(ll, "vdev_probe") || strings.Contains(ll, "vhost_config") && strings.Contains(ll, "fail") ||
			strings.Contains(ll, "cause:") || strings.Contains(ll, "error") {
			b.WriteString("  ")
			b.WriteString(strings.TrimRight(l, "\r"))
			b.WriteByte('\n')
		}
	}
	s := ""
	if b.Len() > 0 {
		s = "testpmd errors:\n" + b.String()
	}
	return s + "--- testpmd output tail (" + shellJoin(t.args) + ") ---\n" + tail
}

func (t *TestPMD) readLoop(r *os.File, logf *os.File) {
	defer close(t.readDone)
	defer r.Close()
	if logf != nil {
		defer logf.Close()
	}
	b := make([]byte, 64<<10)
	for {
		n, err := r.Read(b)
		if n > 0 {
			chunk := b[:n]
			if logf != nil {
				logf.Write(chunk)
			}
			t.mu.Lock()
			t.buf = append(t.buf, chunk...)
			t.tail = append(t.tail, chunk...)
			if len(t.tail) > 2*tailMax {
				t.tail = append(t.tail[:0:0], t.tail[len(t.tail)-tailMax:]...)
			}
			t.mu.Unlock()
			select {
			case t.notify <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return
		}
	}
}

// OutputTail returns the last few KiB of testpmd's output, for error
// messages.
func (t *TestPMD) OutputTail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.tail
	if len(s) > tailMax {
		s = s[len(s)-tailMax:]
	}
	return strings.ReplaceAll(string(s), "\r", "")
}

// FilePrefix returns the EAL --file-prefix of this instance.
func (t *TestPMD) FilePrefix() string { return t.prefix }

// Pid returns testpmd's process id (of the taskset/stdbuf wrappers, which
// exec testpmd in place).
func (t *TestPMD) Pid() int { return t.proc.Process.Pid }

// CommandLine returns the command line testpmd was started with.
func (t *TestPMD) CommandLine() []string { return append([]string(nil), t.args...) }

// Exited is closed when the testpmd process has exited.
func (t *TestPMD) Exited() <-chan struct{} { return t.exited }

var (
	promptNL = []byte("\n" + Prompt)
	promptB  = []byte(Prompt)
)

// readUntilPrompt consumes output up to and including the next prompt and
// returns what came before it. first accepts a prompt at the very start of
// the buffer (startup, empty answers are preceded by the echo line anyway).
func (t *TestPMD) readUntilPrompt(ctx context.Context, first bool) (string, error) {
	for {
		t.mu.Lock()
		i := bytes.Index(t.buf, promptNL)
		var out []byte
		found := false
		if first && bytes.HasPrefix(t.buf, promptB) {
			found = true
			t.buf = t.buf[len(promptB):]
		} else if i >= 0 {
			found = true
			out = append([]byte(nil), t.buf[:i+1]...)
			t.buf = t.buf[i+len(promptNL):]
		}
		t.mu.Unlock()
		if found {
			return string(out), nil
		}
		select {
		case <-t.notify:
		case <-t.readDone:
			// Drain once more: the last chunk may hold the prompt.
			t.mu.Lock()
			has := bytes.Contains(t.buf, promptNL) || first && bytes.HasPrefix(t.buf, promptB)
			t.mu.Unlock()
			if has {
				continue
			}
			return "", errors.New("testpmd exited")
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// CmdError is returned by Cmd when testpmd's command-line parser rejected
// the command ("Bad arguments", "Command not found", "Ambiguous command").
type CmdError struct {
	// Cmd is the command line sent.
	Cmd string
	// Output is testpmd's answer.
	Output string
}

func (e *CmdError) Error() string {
	return fmt.Sprintf("testpmd: command %q rejected: %s", e.Cmd, strings.TrimSpace(e.Output))
}

// Cmd sends one command line and returns testpmd's answer: its output up to
// the next prompt, with the echoed command line and carriage returns
// removed. If ctx ends first, Cmd returns ctx's error and the next Cmd first
// skips the late answer.
func (t *TestPMD) Cmd(ctx context.Context, line string) (string, error) {
	if strings.ContainsAny(line, "\r\n") {
		return "", fmt.Errorf("testpmd: command %q contains a newline", line)
	}
	t.cmdMu.Lock()
	defer t.cmdMu.Unlock()
	select {
	case <-t.exited:
		return "", fmt.Errorf("testpmd: command %q: testpmd has exited\n%s", line, t.OutputTail())
	default:
	}
	for t.pending > 0 {
		if _, err := t.readUntilPrompt(ctx, false); err != nil {
			return "", fmt.Errorf("testpmd: command %q: still waiting for an earlier answer: %w", line, err)
		}
		t.pending--
	}
	// Drop unsolicited output (link events) that arrived since the last
	// prompt; it stays in the tail and the log.
	t.mu.Lock()
	t.buf = t.buf[:0]
	t.mu.Unlock()
	if _, err := io.WriteString(t.stdin, line+"\n"); err != nil {
		return "", fmt.Errorf("testpmd: command %q: write: %w", line, err)
	}
	out, err := t.readUntilPrompt(ctx, false)
	if err != nil {
		if ctx.Err() != nil {
			t.pending++
		}
		return "", fmt.Errorf("testpmd: command %q: %w\n%s", line, err, t.OutputTail())
	}
	out = strings.ReplaceAll(out, "\r", "")
	// The first line is cmdline's echo of the command.
	if i := strings.IndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	} else {
		out = ""
	}
	for _, bad := range []string{"Bad arguments", "Command not found", "Ambiguous command"} {
		if strings.Contains(out, bad) {
			return out, &CmdError{Cmd: line, Output: out}
		}
	}
	return out, nil
}

// Close quits testpmd: "quit", then up to 10 s for it to exit, then SIGTERM
// and SIGKILL to its process group. It reaps the process, and removes the
// EAL runtime directory of its file prefix and the socket files of
// server-mode ports. Close may be called more than once.
func (t *TestPMD) Close() error {
	t.closeOnce.Do(func() { t.closeErr = t.close() })
	return t.closeErr
}

func (t *TestPMD) close() error {
	var err error
	killed := false
	select {
	case <-t.exited:
	default:
		io.WriteString(t.stdin, "quit\n")
		t.stdin.Close() // EOF makes testpmd quit as well
		select {
		case <-t.exited:
		case <-time.After(10 * time.Second):
			killed = true
			syscall.Kill(-t.proc.Process.Pid, syscall.SIGTERM)
			select {
			case <-t.exited:
			case <-time.After(3 * time.Second):
				syscall.Kill(-t.proc.Process.Pid, syscall.SIGKILL)
				<-t.exited
			}
		}
	}
	t.stdin.Close()
	select {
	case <-t.readDone:
	case <-time.After(2 * time.Second):
	}
	if killed {
		err = fmt.Errorf("testpmd did not quit within 10 s, killed (%v)\n%s", t.waitErr, t.OutputTail())
	} else if t.waitErr != nil {
		err = fmt.Errorf("testpmd exited: %v\n%s", t.waitErr, t.OutputTail())
	}
	t.cleanup()
	return err
}

func (t *TestPMD) closeLog() {
	if t.logf != nil {
		t.logf.Close()
		t.logf = nil
	}
}

// RuntimeDirs returns the directories where EAL may create runtime files for
// prefix (as root: /var/run/dpdk/PREFIX).
func RuntimeDirs(prefix string) []string {
	var dirs []string
	if os.Geteuid() == 0 {
		dirs = append(dirs, filepath.Join("/var/run/dpdk", prefix))
	}
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
		dirs = append(dirs, filepath.Join(x, "dpdk", prefix))
	}
	dirs = append(dirs, filepath.Join(os.TempDir(), "dpdk", prefix))
	return dirs
}

func (t *TestPMD) cleanup() {
	for _, d := range RuntimeDirs(t.prefix) {
		if t.autoPf {
			os.RemoveAll(d)
			continue
		}
		// A prefix chosen by the caller: remove only what testpmd leaves
		// (telemetry sockets) and the directory once it is empty.
		for _, f := range []string{"dpdk_telemetry.v2", "telemetry", "mp_socket"} {
			os.Remove(filepath.Join(d, f))
		}
		os.Remove(d)
	}
	for _, p := range t.cfg.Ports {
		if p.Server {
			removeSocket(p.Socket)
		}
	}
	for _, p := range t.cfg.VhostPorts {
		if !p.Client {
			removeSocket(p.Socket)
		}
	}
}

func removeSocket(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
}

func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t'\"$\\;&|<>()*?[]{}") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// queues is the number of queue pairs testpmd runs per port: the largest
// of its ports' (--rxq/--txq), at least 1.
func (c Config) queues() int {
	q := 1
	for _, p := range c.Ports {
		q = max(q, p.Queues)
	}
	for _, p := range c.VhostPorts {
		q = max(q, p.Queues)
	}
	return q
}

// queues is the number of queue pairs of each port (see Config.queues).
func (t *TestPMD) queues() int { return t.cfg.queues() }
