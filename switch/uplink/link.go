//go:build cgo

package uplink

import (
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/switch/dpdk"
)

// LinkState is the uplink's link as vhostd reports it.
type LinkState struct {
	dpdk.Link
	// Unknown is set when the device's kernel interface has left vhostd's
	// network namespace (moved into another one): vhostd cannot see its
	// state, though frames may still flow. Up is false then.
	Unknown bool
}

func (l LinkState) String() string {
	if l.Unknown {
		return "unknown"
	}
	return l.Link.String()
}

// readLink returns the link: DPDK's view, corrected by the kernel
// interface's state when the device has one. DPDK 22.11's net_af_packet
// reports up whatever the interface does, and net_tap looks only at
// IFF_UP; the kernel's IFF_RUNNING (carrier) is the truth for both.
func (p *Port) readLink() (LinkState, error) {
	l, err := p.dev.Link()
	if err != nil {
		return LinkState{}, err
	}
	if p.ifindex == 0 {
		return LinkState{Link: l}, nil
	}
	kl, err := netlink.LinkByIndex(p.ifindex)
	if err != nil || kl.Attrs().Name != p.iface {
		return LinkState{Link: dpdk.Link{}, Unknown: true}, nil
	}
	flags := kl.Attrs().RawFlags
	l.Up = l.Up && flags&unix.IFF_UP != 0 && flags&unix.IFF_RUNNING != 0
	return LinkState{Link: l}, nil
}

// monitor reads the link state every LinkPoll and logs changes.
func (p *Port) monitor() {
	defer close(p.monDone)
	t := time.NewTicker(p.cfg.LinkPoll)
	defer t.Stop()
	for {
		select {
		case <-p.stopMon:
			return
		case <-t.C:
		}
		l, err := p.readLink()
		if err != nil {
			continue
		}
		old := p.link.Load()
		if *old == l {
			continue
		}
		p.link.Store(&l)
		if old.Up == l.Up && old.Unknown == l.Unknown {
			continue // speed or duplex only
		}
		f := p.log.WithFields(logrus.Fields{"device": p.dev.Name(), "link": l.String()})
		switch {
		case l.Unknown:
			f.WithField("interface", p.iface).Warn("uplink link unknown: its kernel interface left vhostd's network namespace; frames may still flow")
		case l.Up:
			p.linkChanges.Add(1)
			f.Info("uplink link up")
		default:
			p.linkChanges.Add(1)
			f.Warn("uplink link down")
		}
	}
}
