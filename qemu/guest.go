//go:build linux

// Package qemu starts small QEMU guests whose virtio-net NICs are backed by
// vhost-user sockets, and drives them over their serial console. It also
// holds a QMP client ([DialQMP]), which is also a go-qemu qmp.Monitor
// ([QMP.Monitor]) for go-qemu's generated commands, and, on top of it, the
// hotplug of vhost-user NICs into running guests ([AttachNIC],
// [DetachNIC]).
//
// The guests are software-emulated (TCG) and boot the test image built by
// test/guest/build.sh: a Debian cloud kernel with an initramfs holding
// busybox, the virtio-net modules and an init that prints ReadyMarker and
// then executes commands sent by [Guest.Run]. See README.md in this
// directory for the console protocol and the guest's kernel arguments.
package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultBinary is the QEMU binary used when GuestConfig.Binary is empty.
const DefaultBinary = "qemu-system-x86_64"

// DefaultMemoryMB is the guest RAM size used when GuestConfig.MemoryMB is zero.
const DefaultMemoryMB = 256

// ReadyMarker is the line the test guest prints on its console once it has
// booted, configured its network and is ready for commands.
const ReadyMarker = "VHOSTD-GUEST-READY"

// KernelArgs are the kernel command-line arguments every guest gets before
// GuestConfig.Append.
const KernelArgs = "console=ttyS0 quiet panic=-1"

// DefaultShutdownTimeout bounds Shutdown when its context has no deadline.
const DefaultShutdownTimeout = 30 * time.Second

// ErrExited is returned (wrapped) when QEMU exits while a caller waits for
// the guest.
var ErrExited = errors.New("qemu exited")

// NIC is a virtio-net device backed by a vhost-user socket.
type NIC struct {
	// SocketPath is the vhost-user unix socket.
	SocketPath string
	// MAC is the guest MAC address; when empty QEMU picks one (the same one
	// for every guest), so set it whenever guests share a switch.
	MAC string
	// ID, when set, is the QEMU device id (for QMP device_del and friends).
	ID string
	// Reconnect, when positive, makes QEMU (as socket client) retry a lost
	// or refused backend connection every Reconnect seconds.
	Reconnect int
	// Server makes QEMU listen on SocketPath and the backend connect to it
	// (vhost-user client mode of the backend). QEMU then waits for the
	// backend before the guest boots.
	Server bool
	// Bus, when set, is the PCI bus to plug the device into (e.g. a PCIe
	// root port on a q35 machine); by default QEMU picks one.
	Bus string
	// HostMTU, when positive, is the MTU QEMU tells the driver
	// (host_mtu=): QEMU then asks the backend for it (NET_SET_MTU) and
	// does not start the device if the backend refuses.
	HostMTU int
	// DeviceExtra, when set, is appended as it is to the -device
	// virtio-net-pci options, e.g. "guest_announce=off" (QEMU then asks
	// the backend to announce a migrated guest with SEND_RARP instead of
	// telling the driver to).
	DeviceExtra string
	// Queues, when above 1, gives the device that many queue pairs
	// (netdev queues=, device mq=on). The guest's driver uses as many as
	// it has vCPUs (Linux's default), so give the guest -smp Queues for
	// all of them to run.
	Queues int
}

// GuestConfig describes a guest to start.
type GuestConfig struct {
	// Binary is the QEMU system emulator; DefaultBinary if empty.
	Binary string
	// Kernel and Initrd are the guest kernel and initramfs (see
	// test/guestimage). Kernel is required.
	Kernel string
	Initrd string
	// MemoryMB is the guest RAM size; DefaultMemoryMB if zero.
	MemoryMB int
	// Append holds extra kernel arguments, appended to KernelArgs, e.g.
	// "guestip=10.9.0.1/24".
	Append string
	// NICs are the guest's vhost-user network devices, in PCI order (the
	// first becomes eth0).
	NICs []NIC
	// QMPSocket, when set, is a unix socket path on which QEMU serves QMP.
	QMPSocket string
	// PrivateMemory gives the guest ordinary, non-shareable RAM. A
	// vhost-user backend cannot map such memory; set it only to test that
	// failure. By default guest RAM is a shared memfd.
	PrivateMemory bool
	// HugePages, when set, is a hugetlbfs mount: guest RAM is then a
	// shared file there (memory-backend-file), as in most production
	// setups, instead of a memfd.
	HugePages string
	// NoReboot makes QEMU exit instead of resetting when the guest reboots.
	NoReboot bool
	// ConsoleLog, when set, is a file that receives everything the guest
	// prints on its serial console (truncated at Start).
	ConsoleLog string
	// ExtraArgs are appended to the QEMU command line as they are.
	ExtraArgs []string
}

// optEscape doubles commas, QEMU's escape for them inside option values.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// NICArgs returns the QEMU arguments that attach n as the index'th vhost-user
// virtio-net device (chardev "c<index>", netdev "n<index>"). The device has
// vectors=0: QEMU 7.2 under TCG crashes with MSI-X and vhost-user.
func NICArgs(n NIC, index int) []string {
	chardev := fmt.Sprintf("socket,id=c%d,path=%s", index, optEscape(n.SocketPath))
	if n.Server {
		chardev += ",server=on,wait=off"
	} else if n.Reconnect > 0 {
		chardev += ",reconnect=" + strconv.Itoa(n.Reconnect)
	}
	device := fmt.Sprintf("virtio-net-pci,netdev=n%d", index)
	if n.MAC != "" {
		device += ",mac=" + n.MAC
	}
	device += ",vectors=0"
	if n.HostMTU > 0 {
		device += ",host_mtu=" + strconv.Itoa(n.HostMTU)
	}
	if n.Bus != "" {
		device += ",bus=" + optEscape(n.Bus)
	}
	if n.ID != "" {
		device += ",id=" + optEscape(n.ID)
	}
	netdev := fmt.Sprintf("vhost-user,id=n%d,chardev=c%d", index, index)
	if n.Queues > 1 {
		device += ",mq=on"
		netdev += ",queues=" + strconv.Itoa(n.Queues)
	}
	if n.DeviceExtra != "" {
		device += "," + n.DeviceExtra
	}
	return []string{
		"-chardev", chardev,
		"-netdev", netdev,
		"-device", device,
	}
}

// SharedMemoryArgs returns the QEMU arguments that give a guest sizeMB MiB of
// RAM that a vhost-user backend can map (a shared memfd), including -m.
func SharedMemoryArgs(sizeMB int) []string {
	return []string{
		"-m", fmt.Sprintf("%dM", sizeMB),
		"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", sizeMB),
		"-numa", "node,memdev=mem",
	}
}

// HugePageMemoryArgs returns the QEMU arguments that give a guest sizeMB
// MiB of RAM as a shared file on the hugetlbfs mounted at dir, including
// -m. QEMU creates the file and unlinks it at once; the backend maps it
// from the fd QEMU sends.
func HugePageMemoryArgs(sizeMB int, dir string) []string {
	return []string{
		"-m", fmt.Sprintf("%dM", sizeMB),
		"-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=on", sizeMB, optEscape(dir)),
		"-numa", "node,memdev=mem",
	}
}

func (c *GuestConfig) binary() string {
	if c.Binary == "" {
		return DefaultBinary
	}
	return c.Binary
}

func (c *GuestConfig) memoryMB() int {
	if c.MemoryMB <= 0 {
		return DefaultMemoryMB
	}
	return c.MemoryMB
}

// Validate reports whether the configuration is complete.
func (c *GuestConfig) Validate() error {
	if c.Kernel == "" {
		return errors.New("guest config: no kernel")
	}
	for i, n := range c.NICs {
		if n.SocketPath == "" {
			return fmt.Errorf("guest config: NIC %d: no socket path", i)
		}
	}
	return nil
}

// Args returns the QEMU command-line arguments (without the binary) that
// Start uses for this configuration. The serial console is on stdio.
func (c *GuestConfig) Args() []string {
	args := []string{
		"-accel", "tcg",
		"-nographic", "-display", "none",
		"-no-user-config", "-nodefaults",
		"-serial", "stdio",
	}
	switch {
	case c.PrivateMemory:
		args = append(args, "-m", fmt.Sprintf("%dM", c.memoryMB()))
	case c.HugePages != "":
		args = append(args, HugePageMemoryArgs(c.memoryMB(), c.HugePages)...)
	default:
		args = append(args, SharedMemoryArgs(c.memoryMB())...)
	}
	args = append(args, "-kernel", c.Kernel)
	if c.Initrd != "" {
		args = append(args, "-initrd", c.Initrd)
	}
	appendArgs := KernelArgs
	if a := strings.TrimSpace(c.Append); a != "" {
		appendArgs += " " + a
	}
	args = append(args, "-append", appendArgs)
	if c.NoReboot {
		args = append(args, "-no-reboot")
	}
	if c.QMPSocket != "" {
		args = append(args, "-qmp", "unix:"+optEscape(c.QMPSocket)+",server=on,wait=off")
	}
	for i, n := range c.NICs {
		args = append(args, NICArgs(n, i)...)
	}
	return append(args, c.ExtraArgs...)
}

// Guest is a running QEMU guest.
type Guest struct {
	cfg     GuestConfig
	cmd     *exec.Cmd
	stdin   *os.File
	con     *console
	stderr  lockedBuffer
	done    chan struct{}
	waitErr error // valid once done is closed

	sem     chan struct{} // held by Run and Reboot
	writeMu sync.Mutex
	nonce   string
	seq     atomic.Uint64
}

// Start starts QEMU for cfg and waits until the guest prints ReadyMarker.
// ctx bounds only the wait for the guest, not the life of QEMU. On failure
// QEMU is killed and the error includes the end of the console output and
// QEMU's stderr.
func Start(ctx context.Context, cfg GuestConfig) (*Guest, error) {
	g, err := launch(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := g.waitReady(ctx, 0); err != nil {
		g.Kill()
		return nil, fmt.Errorf("start guest: %w", err)
	}
	return g, nil
}

// launch starts QEMU for cfg, with extra arguments after cfg's, and
// returns at once.
func launch(cfg GuestConfig, extra ...string) (*Guest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("start guest: %w", err)
	}
	for _, f := range []string{cfg.Kernel, cfg.Initrd} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("start guest: %w", err)
		}
	}
	var nonce [4]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("start guest: %w", err)
	}
	g := &Guest{
		cfg:   cfg,
		con:   newConsole(),
		done:  make(chan struct{}),
		sem:   make(chan struct{}, 1),
		nonce: hex.EncodeToString(nonce[:]),
	}
	if cfg.ConsoleLog != "" {
		f, err := os.Create(cfg.ConsoleLog)
		if err != nil {
			return nil, fmt.Errorf("start guest: console log: %w", err)
		}
		g.con.log = f
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		g.con.closeLog()
		return nil, fmt.Errorf("start guest: %w", err)
	}
	g.stdin = pw
	g.cmd = exec.Command(cfg.binary(), append(cfg.Args(), extra...)...)
	g.cmd.Stdin = pr
	g.cmd.Stdout = g.con
	g.cmd.Stderr = &g.stderr
	// QEMU must not outlive the process that started it (e.g. a test
	// binary killed on timeout).
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = g.cmd.Start()
	pr.Close()
	if err != nil {
		pw.Close()
		g.con.closeLog()
		return nil, fmt.Errorf("start guest: %w", err)
	}
	go func() {
		g.waitErr = g.cmd.Wait()
		g.con.closeLog()
		g.stdin.Close()
		close(g.done)
	}()
	return g, nil
}

// Pid returns the process id of QEMU.
func (g *Guest) Pid() int { return g.cmd.Process.Pid }

// Config returns the configuration the guest was started with.
func (g *Guest) Config() GuestConfig { return g.cfg }

// Done returns a channel that is closed once QEMU has exited and been
// reaped.
func (g *Guest) Done() <-chan struct{} { return g.done }

// Console returns everything the guest has printed on its serial console
// so far.
func (g *Guest) Console() string { return g.con.String() }

// Stderr returns what QEMU has written to its standard error so far.
func (g *Guest) Stderr() string { return g.stderr.String() }

// Wait waits for QEMU to exit and returns nil if it exited with status 0.
func (g *Guest) Wait() error {
	<-g.done
	return g.exitError()
}

// Kill kills QEMU at once and waits until it has been reaped.
func (g *Guest) Kill() error {
	select {
	case <-g.done:
		return nil
	default:
	}
	err := g.cmd.Process.Kill()
	<-g.done
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill guest: %w", err)
	}
	return nil
}

// Shutdown powers the guest off and waits for QEMU to exit; a command still
// running in the guest is interrupted. If the guest has not powered off
// when ctx ends (or after DefaultShutdownTimeout if ctx has no deadline),
// QEMU is killed and an error returned. QEMU is always reaped on return.
func (g *Guest) Shutdown(ctx context.Context) error {
	select {
	case <-g.done:
		return nil
	default:
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultShutdownTimeout)
		defer cancel()
	}
	// ^C first: interrupt a running command and drop unread input.
	sendErr := g.write(ctx, []byte{0x03})
	if sendErr == nil {
		sendErr = g.send(ctx, "poweroff -f", g.nextID())
	}
	select {
	case <-g.done:
		return nil
	case <-ctx.Done():
	}
	g.Kill()
	if sendErr != nil && !errors.Is(sendErr, ctx.Err()) {
		return fmt.Errorf("shutdown guest: %w; QEMU killed", sendErr)
	}
	return fmt.Errorf("shutdown guest: no power-off: %w; QEMU killed", ctx.Err())
}

// Reboot reboots the guest (reboot -f) and waits until it is ready again.
// With NoReboot, QEMU exits instead and Reboot returns an error wrapping
// ErrExited.
func (g *Guest) Reboot(ctx context.Context) error {
	if err := g.acquire(ctx); err != nil {
		return fmt.Errorf("reboot guest: %w", err)
	}
	defer g.release()
	from := g.con.Len()
	if err := g.send(ctx, "reboot -f", g.nextID()); err != nil {
		return fmt.Errorf("reboot guest: %w", err)
	}
	if _, err := g.waitReady(ctx, from); err != nil {
		return fmt.Errorf("reboot guest: %w", err)
	}
	return nil
}

// Run runs cmd with sh in the guest (cwd /, stdin /dev/null, a fresh shell
// each time) and returns its combined stdout and stderr and its exit status.
// Commands run one at a time. If ctx ends first, the command is interrupted
// as with ^C and Run returns an error with exit status -1.
func (g *Guest) Run(ctx context.Context, cmd string) (output string, exitCode int, err error) {
	out, code, err := g.run(ctx, cmd)
	if err != nil {
		return "", -1, fmt.Errorf("run %q in guest: %w", abbrev(cmd), err)
	}
	return out, code, nil
}

func (g *Guest) run(ctx context.Context, cmd string) (string, int, error) {
	if err := g.acquire(ctx); err != nil {
		return "", -1, err
	}
	defer g.release()
	id := g.nextID()
	from := g.con.Len()
	if err := g.send(ctx, cmd, id); err != nil {
		return "", -1, err
	}
	begin, end := "VXB:"+id, "VXE:"+id+":"
	var (
		started bool
		b64     strings.Builder
		code    = -1
		size    = -1
		perr    error
	)
	_, err := g.waitLine(ctx, from, func(line string) bool {
		if !started {
			started = strings.HasSuffix(line, begin)
			return false
		}
		if i := strings.Index(line, end); i >= 0 {
			f := strings.Split(line[i+len(end):], ":")
			if len(f) == 2 {
				code, perr = strconv.Atoi(f[0])
				if perr == nil {
					size, perr = strconv.Atoi(f[1])
				}
			} else {
				perr = fmt.Errorf("bad end marker %q", line)
			}
			return true
		}
		if isBase64Line(line) {
			b64.WriteString(line)
		}
		// Anything else is a stray console message.
		return false
	})
	if err != nil {
		if ctx.Err() != nil {
			// Interrupt the command; the guest stays usable.
			ictx, cancel := context.WithTimeout(context.Background(), time.Second)
			g.write(ictx, []byte{0x03})
			cancel()
		}
		return "", -1, err
	}
	if perr != nil {
		return "", -1, fmt.Errorf("garbled console reply: %w", perr)
	}
	out, derr := base64.StdEncoding.DecodeString(b64.String())
	if derr != nil || len(out) != size {
		return "", -1, fmt.Errorf("garbled console reply: got %d of %d output bytes (%v)", len(out), size, derr)
	}
	return string(out), code, nil
}

func (g *Guest) acquire(ctx context.Context) error {
	select {
	case g.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-g.done:
		return g.exitedError()
	}
}

func (g *Guest) release() { <-g.sem }

func (g *Guest) nextID() string {
	return g.nonce + "-" + strconv.FormatUint(g.seq.Add(1), 10)
}

// send hands cmd to the guest's command loop under the given id.
func (g *Guest) send(ctx context.Context, cmd, id string) error {
	if !strings.HasSuffix(cmd, "\n") {
		cmd += "\n"
	}
	enc := base64.StdEncoding.EncodeToString([]byte(cmd))
	var b bytes.Buffer
	const chunk = 512 // a multiple of 4, well below the tty's 4 KiB line limit
	for len(enc) > 0 {
		n := min(chunk, len(enc))
		b.WriteString("VXD ")
		b.WriteString(enc[:n])
		b.WriteByte('\n')
		enc = enc[n:]
	}
	b.WriteString("VXR " + id + "\n")
	return g.write(ctx, b.Bytes())
}

// write writes p to the guest's serial input, giving up when ctx ends.
func (g *Guest) write(ctx context.Context, p []byte) error {
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	select {
	case <-g.done:
		return g.exitedError()
	default:
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		g.stdin.SetWriteDeadline(time.Unix(1, 0))
		close(fired)
	})
	_, err := g.stdin.Write(p)
	if !stop() {
		<-fired
		g.stdin.SetWriteDeadline(time.Time{})
		if err != nil {
			return ctx.Err()
		}
	}
	if err != nil {
		select {
		case <-g.done:
			return g.exitedError()
		default:
		}
		return fmt.Errorf("write console: %w", err)
	}
	return nil
}

// waitReady waits for ReadyMarker on a console line at or after offset from.
func (g *Guest) waitReady(ctx context.Context, from int) (int, error) {
	next, err := g.waitLine(ctx, from, func(line string) bool { return line == ReadyMarker })
	if err != nil {
		return 0, fmt.Errorf("waiting for %s: %w", ReadyMarker, err)
	}
	return next, nil
}

// waitLine calls match on each complete console line from offset from on
// (trailing CR and blanks removed) until match returns true, and returns the
// offset after that line. It fails when ctx ends or QEMU exits; the error
// then includes diagnostics.
func (g *Guest) waitLine(ctx context.Context, from int, match func(string) bool) (int, error) {
	scan := func() (int, bool, <-chan struct{}) {
		data, changed := g.con.since(from)
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				return from, false, changed
			}
			line := strings.TrimRight(string(data[:i]), "\r\t ")
			data = data[i+1:]
			from += i + 1
			if match(line) {
				return from, true, changed
			}
		}
	}
	for {
		next, ok, changed := scan()
		if ok {
			return next, nil
		}
		select {
		case <-changed:
		case <-g.done:
			// All output has been copied once QEMU is reaped.
			if next, ok, _ := scan(); ok {
				return next, nil
			}
			return 0, g.exitedError()
		case <-ctx.Done():
			return 0, fmt.Errorf("%w\n%s", ctx.Err(), g.diagnostics())
		}
	}
}

// exitError is the result of waiting for QEMU; call only once done is closed.
func (g *Guest) exitError() error {
	if g.waitErr == nil {
		return nil
	}
	return fmt.Errorf("qemu: %w\n%s", g.waitErr, g.diagnostics())
}

// exitedError reports that QEMU has exited; call only once done is closed.
func (g *Guest) exitedError() error {
	status := "status 0"
	if g.waitErr != nil {
		status = g.waitErr.Error()
	}
	return fmt.Errorf("%w (%s)\n%s", ErrExited, status, g.diagnostics())
}

// diagnostics returns the end of the console output and of QEMU's stderr.
func (g *Guest) diagnostics() string {
	const max = 2048
	return fmt.Sprintf("--- console (last %d bytes) ---\n%s\n--- qemu stderr ---\n%s",
		max, tail(g.con.String(), max), tail(g.stderr.String(), max))
}

func tail(s string, n int) string {
	s = strings.TrimRight(s, "\r\n")
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

func abbrev(s string) string {
	const max = 60
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

func isBase64Line(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return true
}

// console collects the guest's serial output: in memory, optionally in a log
// file, and wakes up waiters on every write.
type console struct {
	mu      sync.Mutex
	buf     []byte
	log     *os.File
	changed chan struct{} // closed and replaced on every write
}

func newConsole() *console { return &console{changed: make(chan struct{})} }

// Write never fails, so that QEMU's output is always drained.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	if c.log != nil {
		if _, err := c.log.Write(p); err != nil {
			c.log.Close()
			c.log = nil
		}
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return len(p), nil
}

// since returns the output from offset from on and a channel closed at the
// next write.
func (c *console) since(from int) ([]byte, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf[from:len(c.buf):len(c.buf)], c.changed
}

func (c *console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

func (c *console) closeLog() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.log != nil {
		c.log.Close()
		c.log = nil
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
