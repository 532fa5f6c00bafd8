package libvirt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// debianPackages are what the test needs from Debian 12 besides QEMU; .ci/deps
// installs them.
const debianPackages = "libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"

// requireLibvirt fails the test (never skips it) when libvirt, QEMU or the
// tools to give libvirt a private mount namespace are missing, or when not
// run as root.
func requireLibvirt(t *testing.T) {
	t.Helper()
	for _, b := range []string{"libvirtd", "virtlogd", "virsh"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found: install libvirt with `apt-get install -y --no-install-recommends %s` (or `make deps`): %v", b, debianPackages, err)
		}
	}
	if _, err := exec.LookPath(qemuBinary); err != nil {
		t.Fatalf("%s not found: apt-get install -y qemu-system-x86 (or `make deps`): %v", qemuBinary, err)
	}
	for _, b := range []string{"unshare", "nsenter", "mount", "useradd"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found (util-linux, mount, passwd): %v", b, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("the libvirt test needs root (system libvirtd, QEMU with memfd memory)")
	}
}

// qemuConf is the qemu.conf of the private libvirtd: QEMU runs as root with
// no security driver, no cgroups and no per-domain mount namespace, as in
// a container without systemd (LAB.md, "libvirt").
const qemuConf = `# Written by vhostd's test/libvirt for its private libvirtd.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
`

// privateDirs are libvirt's system directories; the test mounts a fresh
// directory over each, inside a mount namespace of its own, so its
// libvirtd neither sees nor changes the host's libvirt configuration and
// state (a system libvirtd may even be running).
var privateDirs = []struct{ name, path string }{
	{"etc", "/etc/libvirt"},
	{"run", "/run/libvirt"},
	{"lib", "/var/lib/libvirt"},
	{"log", "/var/log/libvirt"},
	{"cache", "/var/cache/libvirt"},
}

// libvirt is a libvirtd and virtlogd started by the test in a private
// mount namespace; the test reaches it through its socket.
type libvirt struct {
	t *testing.T
	// dir holds the private trees mounted over privateDirs.
	dir string
	// uri is the connection URI for virsh.
	uri string

	holder, virtlogd, libvirtd *daemon
	mntNS                      string // the namespace, as readlink /proc/PID/ns/mnt shows it
}

// daemon is a process the test started and must stop.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid once done is closed
}

func startDaemon(t *testing.T, name, logFile string, args ...string) *daemon {
	t.Helper()
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{name: name, cmd: exec.Command(args[0], args[1:]...), log: logFile, done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = f, f
	// Gone with the test binary, should it be killed on timeout.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		f.Close()
		close(d.done)
	}()
	return d
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it; it reports whether SIGTERM was enough.
func (d *daemon) stop(grace time.Duration) bool {
	if d.exited() {
		return true
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return true
	case <-time.After(grace):
	}
	d.cmd.Process.Kill()
	<-d.done
	return false
}

func (d *daemon) output() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// startLibvirt sets up and starts a private libvirtd (with its virtlogd)
// and stops both at the end of the test, after destroying every domain
// left. What it changes on the host: the user libvirt-qemu is created if
// missing (libvirtd will not start without it), and the mount points
// /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and
// /etc/libvirt are created (empty) if missing.
func startLibvirt(t *testing.T) *libvirt {
	t.Helper()
	requireLibvirt(t)
	ensureUser(t, "libvirt-qemu")
	dir, err := os.MkdirTemp("", "vhostd-libvirt")
	if err != nil {
		t.Fatal(err)
	}
	lv := &libvirt{t: t, dir: dir, uri: "qemu:///system?socket=" + filepath.Join(dir, "run", "libvirt-sock")}
	t.Cleanup(lv.stop)

	for _, sub := range []string{"etc/qemu", "run", "lib/qemu", "log/qemu", "cache/qemu", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "qemu.conf"), []byte(qemuConf), 0o644); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, p := range privateDirs {
		if err := os.MkdirAll(p.path, 0o755); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&script, "mount --bind %s %s\n", filepath.Join(dir, p.name), p.path)
	}
	script.WriteString("echo ready\nexec sleep infinity\n")

	// The holder keeps the namespace; the daemons join it with nsenter.
	lv.holder = startDaemon(t, "namespace holder", filepath.Join(dir, "logs", "holder.log"),
		"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script.String())
	lv.waitHolder(t)
	ns := "--mount=/proc/" + strconv.Itoa(lv.holder.cmd.Process.Pid) + "/ns/mnt"
	lv.virtlogd = startDaemon(t, "virtlogd", filepath.Join(dir, "logs", "virtlogd.log"), "nsenter", ns, "--", "virtlogd")
	waitFile(t, filepath.Join(dir, "run", "virtlogd-sock"), 30*time.Second, lv.virtlogd)
	lv.libvirtd = startDaemon(t, "libvirtd", filepath.Join(dir, "logs", "libvirtd.log"), "nsenter", ns, "--", "libvirtd")
	waitFile(t, filepath.Join(dir, "run", "libvirt-sock"), 60*time.Second, lv.libvirtd)

	// The first connection waits for libvirtd to probe QEMU's capabilities.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := lv.virsh(ctx, "version")
	if err != nil {
		t.Fatalf("virsh version: %v\n%s\nlibvirtd log:\n%s", err, out, tail(lv.libvirtd.output(), 3000))
	}
	t.Logf("libvirtd up (first connection after %v):\n%s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	return lv
}

// waitHolder waits until the holder has made its mounts.
func (lv *libvirt) waitHolder(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(lv.holder.output(), "ready") {
		if lv.holder.exited() || time.Now().After(deadline) {
			t.Fatalf("private mount namespace for libvirt: %v\n%s", lv.holder.err, lv.holder.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", lv.holder.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	lv.mntNS = ns
}

// waitFile waits until path exists, failing early if d exits.
func waitFile(t *testing.T, path string, timeout time.Duration, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if d.exited() {
			t.Fatalf("%s exited at start: %v\n%s", d.name, d.err, tail(d.output(), 3000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s after %v\n%s", d.name, path, timeout, tail(d.output(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ensureUser creates a system user (and its group) if it does not exist,
// as Debian's libvirt-daemon-system package would.
func ensureUser(t *testing.T, name string) {
	t.Helper()
	if _, err := user.Lookup(name); err == nil {
		return
	}
	out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/var/lib/libvirt",
		"--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput()
	if err != nil {
		// Another test process may have created it meanwhile.
		if _, lerr := user.Lookup(name); lerr == nil {
			return
		}
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Logf("created the system user %s (libvirtd needs it)", name)
}

// virsh runs virsh against the private libvirtd.
func (lv *libvirt) virsh(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "virsh", append([]string{"-c", lv.uri}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// mustVirsh runs virsh and fails the test on an error.
func (lv *libvirt) mustVirsh(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := lv.virsh(ctx, args...)
	if err != nil {
		t.Fatalf("%v\n%s\nlibvirtd log:\n%s", err, out, tail(lv.libvirtd.output(), 2000))
	}
	return out
}

// stop destroys the domains left, stops libvirtd and virtlogd, kills
// whatever else still runs in the namespace (an error: libvirt should
// have stopped it) and removes the private trees.
func (lv *libvirt) stop() {
	t := lv.t
	if lv.libvirtd != nil && !lv.libvirtd.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if out, err := lv.virsh(ctx, "list", "--all", "--name"); err == nil {
			for _, name := range strings.Fields(out) {
				lv.virsh(ctx, "destroy", name)
				lv.virsh(ctx, "undefine", name)
			}
		}
		cancel()
		if !lv.libvirtd.stop(30 * time.Second) {
			t.Errorf("libvirtd did not exit within 30s of SIGTERM: killed")
		}
	}
	if lv.virtlogd != nil && !lv.virtlogd.stop(10*time.Second) {
		t.Errorf("virtlogd did not exit within 10s of SIGTERM: killed")
	}
	if lv.holder != nil {
		if lv.mntNS != "" {
			for _, pid := range lv.pidsInNamespace() {
				cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				t.Errorf("process %d left in libvirt's namespace: %s; killing it", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		lv.holder.stop(5 * time.Second)
	}
	if t.Failed() && lv.libvirtd != nil {
		t.Logf("libvirtd log:\n%s", tail(lv.libvirtd.output(), 4000))
	}
	os.RemoveAll(lv.dir)
}

// pidsInNamespace lists the processes in the private mount namespace
// besides the holder: libvirtd's children, QEMU.
func (lv *libvirt) pidsInNamespace() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == lv.holder.cmd.Process.Pid {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == lv.mntNS {
			pids = append(pids, pid)
		}
	}
	return pids
}

// qemuLog returns the end of a domain's QEMU log (libvirt writes QEMU's
// command line and stderr there).
func (lv *libvirt) qemuLog(name string) string {
	b, err := os.ReadFile(filepath.Join(lv.dir, "log", "qemu", name+".log"))
	if err != nil {
		return err.Error()
	}
	return tail(string(b), 3000)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
