// Command demo shows vhostd switching between two QEMU guests and out
// through its DPDK uplink: it makes a network namespace with a veth pair
// into it, starts bin/vhostd with two vhost-user sockets and the veth's
// outer end as uplink (net_af_packet), boots two small guests (built from
// Debian packages by test/guest/build.sh), has them ping each other and an
// address in the namespace, and prints what vhostctl sees. `make demo`
// runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/nettest"
)

// outsideIP is the address in the namespace behind the uplink.
const outsideIP = "10.9.0.100"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run() error {
	root, err := guestimage.ModuleRoot()
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 10*time.Minute)
	defer cancelT()

	step("building the test guest from Debian packages (cached in build/guest)")
	kernel, initrd, err := guestimage.Build(filepath.Join(root, "build", "guest"))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("/tmp", "vhostd-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctl := filepath.Join(dir, "control.sock")
	vm1, vm2 := filepath.Join(dir, "vm1.sock"), filepath.Join(dir, "vm2.sock")

	step("making a network namespace with %s/24 on a veth pair behind the uplink", outsideIP)
	ns, err := nettest.NewNS()
	if err != nil {
		return fmt.Errorf("network namespace (run as root): %w", err)
	}
	defer ns.Close()
	outer, inner := fmt.Sprintf("vdm%da", os.Getpid()), fmt.Sprintf("vdm%db", os.Getpid())
	veth, err := nettest.NewVeth(outer, inner, ns)
	if err != nil {
		return err
	}
	defer veth.Close()
	if err := ns.Configure(inner, outsideIP+"/24", 0); err != nil {
		return err
	}

	args := []string{"--control", ctl, "--socket", "vm1=" + vm1, "--socket", "vm2=" + vm2, "--uplink", "net_af_packet0,iface=" + outer}
	step("starting vhostd %s", strings.Join(args, " "))
	logPath := filepath.Join(dir, "vhostd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	vd := exec.Command(filepath.Join(root, "bin", "vhostd"), args...)
	vd.Stdout, vd.Stderr = logf, logf
	if err := vd.Start(); err != nil {
		return fmt.Errorf("start vhostd (did `make build` run?): %w", err)
	}
	defer func() {
		vd.Process.Signal(syscall.SIGTERM)
		vd.Wait()
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(vm2); err == nil {
			break
		}
		if i > 100 {
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("vhostd did not create its sockets:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}

	step("booting two guests under QEMU (TCG), each on its own vhostd socket")
	specs := []struct{ name, ip, mac, sock string }{
		{"vm1", "10.9.0.1", "52:54:00:00:00:01", vm1},
		{"vm2", "10.9.0.2", "52:54:00:00:00:02", vm2},
	}
	guests := make([]*qemu.Guest, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := qemu.GuestConfig{Kernel: kernel, Initrd: initrd, Append: "guestip=" + s.ip + "/24",
				NICs: []qemu.NIC{{SocketPath: s.sock, MAC: s.mac}}}
			start := time.Now()
			guests[i], errs[i] = qemu.Start(ctx, cfg)
			if errs[i] == nil {
				fmt.Printf("    %s (%s, %s) booted in %.1fs\n", s.name, s.ip, s.mac, time.Since(start).Seconds())
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, g := range guests {
			if g != nil {
				sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
				g.Shutdown(sctx)
				c()
			}
		}
	}()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("boot %s: %w", specs[i].name, err)
		}
	}

	lossless := true
	for _, p := range []struct {
		from       int
		to         string
		size, pkts int
	}{{0, "10.9.0.2", 56, 5}, {1, "10.9.0.1", 56, 5}, {0, "10.9.0.2", 1400, 5}, {0, "10.9.0.2", 4000, 3},
		{0, outsideIP, 56, 5}, {1, outsideIP, 1400, 5}} {
		cmd := fmt.Sprintf("ping -c %d -s %d -W 5 %s", p.pkts, p.size, p.to)
		where := ""
		if p.to == outsideIP {
			where = " (in the namespace behind the uplink)"
			// The first ping also resolves ARP through the uplink.
			guests[p.from].Run(ctx, "ping -c 1 -W 5 "+p.to)
		}
		step("%s: %s%s", specs[p.from].name, cmd, where)
		out, _, err := guests[p.from].Run(ctx, cmd)
		if err != nil {
			return err
		}
		fmt.Print(out)
		if !strings.Contains(out, " 0% packet loss") {
			lossless = false
		}
	}
	for _, c := range []string{"ports", "stats", "fdb"} {
		step("vhostctl %s", c)
		out, err := exec.Command(filepath.Join(root, "bin", "vhostctl"), "--control", ctl, c).CombinedOutput()
		fmt.Print(string(out))
		if err != nil {
			return fmt.Errorf("vhostctl %s: %w", c, err)
		}
	}
	if !lossless {
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("pings were lost; vhostd log:\n%s", b)
	}
	step("done: the guests talked to each other and, through the DPDK uplink, to the namespace, with 0%% loss")
	return nil
}
