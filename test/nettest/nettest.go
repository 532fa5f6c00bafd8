// Package nettest sets up what tests and the demo need around the uplink:
// network namespaces, veth pairs, interfaces moved into a namespace and
// configured there. Everything goes through netlink (no ip command), and
// everything made has a Close that removes it.
package nettest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a network namespace held open by this process: it has no name in
// /var/run/netns, so it disappears with its last user even when the
// process dies without Close.
type NS struct {
	ns netns.NsHandle
	nl *netlink.Handle
}

// NewNS creates a network namespace.
func NewNS() (*NS, error) {
	ns, err := unshareNS()
	if err != nil {
		return nil, err
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in the new namespace: %w", err)
	}
	n := &NS{ns: ns, nl: nl}
	// Loopback up, as any host has it.
	if lo, err := nl.LinkByName("lo"); err == nil {
		nl.LinkSetUp(lo)
	}
	return n, nil
}

// unshareNS makes a namespace on a locked thread and switches the thread
// back. If switching back fails, the thread stays locked and dies with its
// goroutine instead of running other goroutines in the wrong namespace.
func unshareNS() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("new network namespace (root needed): %w", err)}
			return
		}
		if err := netns.Set(orig); err != nil {
			ns.Close()
			ch <- result{err: fmt.Errorf("back to the original network namespace: %w", err)}
			return // the thread stays locked: Go discards it
		}
		runtime.UnlockOSThread()
		ch <- result{ns: ns}
	}()
	r := <-ch
	return r.ns, r.err
}

// Close releases the namespace; the kernel removes it, and the virtual
// interfaces in it, once nothing else uses it.
func (n *NS) Close() error {
	n.nl.Close()
	return n.ns.Close()
}

// Netlink returns a netlink handle that works inside the namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Fd returns the namespace's file descriptor.
func (n *NS) Fd() int { return int(n.ns) }

// MoveLink moves the interface name from this process's namespace into n.
func (n *NS) MoveLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkSetNsFd(l, n.Fd()); err != nil {
		return fmt.Errorf("move %s into the namespace: %w", name, err)
	}
	return nil
}

// Configure gives the interface name in n the address cidr (e.g.
// "10.9.3.2/24"), sets its MTU (when mtu > 0) and brings it up.
func (n *NS) Configure(name, cidr string, mtu int) error {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s in the namespace: %w", name, err)
	}
	if mtu > 0 {
		if err := n.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
		}
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := n.nl.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", cidr, name, err)
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}

// SetUp brings the interface name in n up or down.
func (n *NS) SetUp(name string, up bool) error {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s in the namespace: %w", name, err)
	}
	if up {
		return n.nl.LinkSetUp(l)
	}
	return n.nl.LinkSetDown(l)
}

// HasLink reports whether an interface named name exists in n.
func (n *NS) HasLink(name string) bool {
	_, err := n.nl.LinkByName(name)
	return err == nil
}

// Veth is a veth pair with one end in this process's namespace and the
// other in a namespace of its own.
type Veth struct {
	Local, Peer string
}

// NewVeth creates the veth pair local <-> peer, brings local up, and moves
// peer into ns (unconfigured: see NS.Configure).
func NewVeth(local, peer string, ns *NS) (*Veth, error) {
	la := netlink.NewLinkAttrs()
	la.Name = local
	v := &netlink.Veth{LinkAttrs: la, PeerName: peer}
	if err := netlink.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("create veth %s/%s: %w", local, peer, err)
	}
	ve := &Veth{Local: local, Peer: peer}
	if err := ns.MoveLink(peer); err != nil {
		ve.Close()
		return nil, err
	}
	l, err := netlink.LinkByName(local)
	if err == nil {
		err = netlink.LinkSetUp(l)
	}
	if err != nil {
		ve.Close()
		return nil, fmt.Errorf("bring %s up: %w", local, err)
	}
	return ve, nil
}

// Close deletes the pair (deleting one end deletes both).
func (v *Veth) Close() error {
	l, err := netlink.LinkByName(v.Local)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return netlink.LinkDel(l)
}

// LinkExists reports whether an interface named name exists in this
// process's namespace.
func LinkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// Promiscuous reports whether the interface name (in this process's
// namespace) has IFF_PROMISC set.
func Promiscuous(name string) (bool, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false, err
	}
	return l.Attrs().RawFlags&unix.IFF_PROMISC != 0, nil
}

// WaitLink waits until an interface named name exists in this process's
// namespace.
func WaitLink(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !LinkExists(name) {
		if time.Now().After(deadline) {
			return fmt.Errorf("interface %s did not appear within %v", name, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Capture receives every frame that arrives on one interface of a
// namespace (an AF_PACKET socket opened inside it).
type Capture struct {
	fd int
}

// Capture opens a capture of the frames arriving on the interface name
// in n. Close it when done.
func (n *NS) Capture(name string) (*Capture, error) {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("capture: find %s in the namespace: %w", name, err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The socket belongs to the namespace the thread is in when it is
		// made: switch a locked thread there and back.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("capture: current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("capture: enter the namespace: %w", err)}
			return
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: l.Attrs().Index})
			if err != nil {
				unix.Close(fd)
			}
		}
		if serr := netns.Set(orig); serr != nil {
			if err == nil {
				unix.Close(fd)
			}
			ch <- result{err: fmt.Errorf("capture: back to the original network namespace: %w", serr)}
			return // the thread stays locked: Go discards it
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("capture on %s: %w", name, err)
		}
		ch <- result{fd: fd, err: err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return &Capture{fd: r.fd}, nil
}

// ErrNoFrame is returned by Capture.Read when no frame came in time.
var ErrNoFrame = errors.New("no frame")

// Read waits up to timeout for the next frame, copies it into b and
// returns its length (truncated to len(b)).
func (c *Capture) Read(b []byte, timeout time.Duration) (int, error) {
	tv := unix.NsecToTimeval(max(timeout, time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("capture: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(c.fd, b, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, ErrNoFrame
		case err != nil:
			return 0, fmt.Errorf("capture: %w", err)
		}
		return n, nil
	}
}

// Write sends frame, a whole Ethernet frame, out of the captured
// interface as it is: no checksum or header is added or completed.
func (c *Capture) Write(frame []byte) error {
	if _, err := unix.Write(c.fd, frame); err != nil {
		return fmt.Errorf("capture: send: %w", err)
	}
	return nil
}

// Close closes the capture.
func (c *Capture) Close() error { return unix.Close(c.fd) }

// Do runs fn on an OS thread that is in the namespace n (so that fn sees
// n's /proc/sys/net, and sockets it makes belong to n), and returns its
// error. If the thread cannot be switched back, it is discarded.
func (n *NS) Do(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("enter the namespace: %w", err)
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr != nil {
			ch <- fmt.Errorf("back to the original network namespace: %w", serr)
			return // the thread stays locked: Go discards it
		}
		runtime.UnlockOSThread()
		ch <- err
	}()
	return <-ch
}

// Sysctl writes value to the network sysctl name of n, as a path below
// /proc/sys/net (e.g. "ipv6/conf/all/disable_ipv6").
func (n *NS) Sysctl(name, value string) error {
	return n.Do(func() error {
		if err := os.WriteFile("/proc/sys/net/"+name, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl net/%s: %w", name, err)
		}
		return nil
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Neigh adds a permanent neighbour entry on the interface name in n: ip
// is at mac, and the namespace never asks (ARP) for it.
func (n *NS) Neigh(name, ip string, mac net.HardwareAddr) error {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("neighbour: find %s in the namespace: %w", name, err)
	}
	a := net.ParseIP(ip)
	if a == nil {
		return fmt.Errorf("neighbour: bad IP %q", ip)
	}
	nb := &netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT, IP: a, HardwareAddr: mac}
	if err := n.nl.NeighSet(nb); err != nil {
		return fmt.Errorf("neighbour %s at %v on %s: %w", ip, mac, name, err)
	}
	return nil
}
