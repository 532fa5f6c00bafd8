//go:build linux

package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/digitalocean/go-qemu/qmp/raw"
)

// ErrMemoryNotShared is returned (wrapped) when a guest's RAM cannot be
// mapped by a vhost-user backend: QEMU hands the backend the fds of its
// memory backends, and only share=on memory is the guest's memory in
// another process (with private memory a hot-plugged NIC comes up but never
// carries a frame).
var ErrMemoryNotShared = errors.New("guest memory is not shared (vhost-user needs share=on memory)")

// ErrNICNotFound is returned (wrapped) by DetachNIC when QEMU has no
// device, netdev or chardev of the NIC.
var ErrNICNotFound = errors.New("no such NIC in QEMU")

// DefaultUnplugTimeout bounds DetachNIC's wait for the guest to release the
// device when its unplugTimeout is zero.
const DefaultUnplugTimeout = 30 * time.Second

// undoTimeout bounds each step that undoes a failed attach; it runs even
// when the caller's context has ended.
const undoTimeout = 10 * time.Second

// NICID returns the QEMU device id used for the NIC on vhostd port port: a
// well-formed QEMU id (letters, digits, '-', '.', '_', starting with a
// letter) derived from the port name.
func NICID(port string) string {
	var b strings.Builder
	b.WriteString("vhostd-")
	for _, r := range port {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// chardevID and netdevID name the backends of the device with id id.
func chardevID(id string) string { return id + "-chr" }
func netdevID(id string) string  { return id + "-net" }

// PortMAC returns a MAC address for the guest NIC on port: the same for the
// same name every time, locally administered and unicast (first octet
// 0x02), the rest from a hash of the name.
func PortMAC(port string) string {
	h := sha256.Sum256([]byte("vhostd port " + port))
	mac := net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
	return mac.String()
}

// Memdev is a QEMU memory backend as query-memdev reports it. (go-qemu's
// raw.Memdev is generated from a schema older than the share member.)
type Memdev struct {
	ID    string `json:"id"`
	Size  uint64 `json:"size"`
	Share *bool  `json:"share"` // reported since QEMU 6.1
}

// CheckSharedMemory returns an error wrapping ErrMemoryNotShared unless
// every memory backend of the guest is shareable (share=on), which is what
// a vhost-user backend needs to map guest RAM.
func CheckSharedMemory(ctx context.Context, q *QMP) error {
	var mds []Memdev
	// Not raw.QueryMemdev: its Memdev has no share member.
	if err := q.Execute(ctx, "query-memdev", nil, &mds); err != nil {
		return fmt.Errorf("check guest memory: %w", err)
	}
	if len(mds) == 0 {
		return fmt.Errorf("%w: QEMU reports no memory backend; start it with %s",
			ErrMemoryNotShared, strings.Join(SharedMemoryArgs(256)[2:], " "))
	}
	var private []string
	for _, md := range mds {
		share := md.Share
		if share == nil {
			// An older QEMU: ask the object itself.
			v, err := commands(ctx, q).QomGet("/objects/"+md.ID, "share")
			if err != nil {
				return fmt.Errorf("check guest memory: backend %s: %w", md.ID, err)
			}
			b, ok := v.(bool)
			if !ok {
				return fmt.Errorf("check guest memory: backend %s: share is %v, not a boolean", md.ID, v)
			}
			share = &b
		}
		if !*share {
			private = append(private, md.ID)
		}
	}
	if len(private) > 0 {
		return fmt.Errorf("%w: memory backend %s has share=off; start QEMU with e.g. %s (vhostctl qemu-args prints the options)",
			ErrMemoryNotShared, strings.Join(private, ", "), strings.Join(SharedMemoryArgs(256)[2:], " "))
	}
	return nil
}

// AttachNIC hot-plugs n into a running QEMU as a virtio-net-pci device with
// vectors=0 (QEMU 7.2 under TCG crashes with MSI-X and vhost-user): it
// checks that guest memory is shared, then adds chardev n.ID+"-chr" (a unix
// socket client of n.SocketPath, with n.Reconnect), netdev n.ID+"-net"
// (vhost-user) and device n.ID. n.ID is required; n.Server is not
// supported. On failure the steps already taken are undone.
//
// QEMU's netdev_add blocks its main loop until the backend answers on the
// socket: attach only to a backend that is listening and has no frontend.
func AttachNIC(ctx context.Context, q *QMP, n NIC) (err error) {
	if n.ID == "" || n.SocketPath == "" {
		return errors.New("attach NIC: device id and socket path are required")
	}
	if n.Server {
		return fmt.Errorf("attach NIC %s: QEMU as socket server is not supported for hotplug", n.ID)
	}
	if err := CheckSharedMemory(ctx, q); err != nil {
		return fmt.Errorf("attach NIC %s: %w", n.ID, err)
	}
	chr, netdev := chardevID(n.ID), netdevID(n.ID)
	mon := commands(ctx, q)
	var undo []func(context.Context) error
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
			if uerr := undo[i](uctx); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
			}
			cancel()
		}
	}()

	server := false
	sock := raw.ChardevBackendSocket{
		Addr:   raw.SocketAddressLegacyUnix{Path: n.SocketPath},
		Server: &server,
	}
	if n.Reconnect > 0 {
		r := int64(n.Reconnect)
		sock.Reconnect = &r
	}
	if _, err := mon.ChardevAdd(chr, sock); err != nil {
		return fmt.Errorf("attach NIC %s: %w", n.ID, err)
	}
	undo = append(undo, func(ctx context.Context) error { return removeChardev(ctx, q, chr) })

	// Not raw.NetdevAdd or raw.DeviceAdd: the schema go-qemu generated them
	// from gives netdev_add no chardev (the vhost-user member) and
	// device_add no device properties (netdev, mac, vectors).
	if err := q.Execute(ctx, "netdev_add", map[string]any{
		"type": "vhost-user", "id": netdev, "chardev": chr,
	}, nil); err != nil {
		return fmt.Errorf("attach NIC %s: %w", n.ID, err)
	}
	undo = append(undo, func(ctx context.Context) error { return deleteNetdev(ctx, q, netdev) })

	dev := map[string]any{
		"driver": "virtio-net-pci", "id": n.ID, "netdev": netdev, "vectors": 0,
	}
	if n.MAC != "" {
		dev["mac"] = n.MAC
	}
	if n.Bus != "" {
		dev["bus"] = n.Bus
	}
	if n.HostMTU > 0 {
		dev["host_mtu"] = n.HostMTU
	}
	if err := q.Execute(ctx, "device_add", dev, nil); err != nil {
		return fmt.Errorf("attach NIC %s: %w", n.ID, err)
	}
	return nil
}

// DetachNIC removes the NIC with device id id that AttachNIC added: it asks
// the guest to release the device (device_del), waits up to unplugTimeout
// (DefaultUnplugTimeout if zero) for QEMU's DEVICE_DELETED event, then
// deletes the netdev (which closes the vhost-user connection) and the
// chardev if it is still there. Parts already gone are skipped; if none
// existed the error wraps ErrNICNotFound. A guest that does not release the
// device (no ACPI PCI hotplug, or still booting) leaves it in place with
// its backend, and DetachNIC returns an error.
func DetachNIC(ctx context.Context, q *QMP, id string, unplugTimeout time.Duration) error {
	if unplugTimeout <= 0 {
		unplugTimeout = DefaultUnplugTimeout
	}
	chr, netdev := chardevID(id), netdevID(id)
	mon := commands(ctx, q)
	found := false

	// Subscribe first: the event may come before device_del's reply is read.
	sub := q.Subscribe("DEVICE_DELETED")
	defer sub.Close()
	err := mon.DeviceDel(id)
	switch {
	case err == nil:
	case IsQMPErrorClass(err, QMPDeviceNotFound):
	case IsQMPErrorClass(err, QMPGenericError) && strings.Contains(err.Error(), "in the process of unplug"):
		// An earlier device_del is still pending in the guest: wait for it.
		err = nil
	default:
		return fmt.Errorf("detach NIC %s: %w", id, err)
	}
	if err == nil {
		found = true
		if err := waitDeviceDeleted(ctx, q, sub, id, unplugTimeout); err != nil {
			return fmt.Errorf("detach NIC %s: %w", id, err)
		}
	}

	switch err := mon.NetdevDel(netdev); {
	case err == nil:
		found = true
	case !IsQMPErrorClass(err, QMPDeviceNotFound):
		return fmt.Errorf("detach NIC %s: %w", id, err)
	}
	// QEMU 7.2 deletes a vhost-user netdev's chardev with it; others may not.
	has, err := hasChardev(ctx, q, chr)
	if err != nil {
		return fmt.Errorf("detach NIC %s: %w", id, err)
	}
	if has {
		found = true
		if err := mon.ChardevRemove(chr); err != nil {
			return fmt.Errorf("detach NIC %s: %w", id, err)
		}
	}
	if !found {
		return fmt.Errorf("detach NIC %s: %w", id, ErrNICNotFound)
	}
	return nil
}

// waitDeviceDeleted waits for DEVICE_DELETED of device id. Should the
// event not come in time, the device may still have gone (a missed event):
// QOM says.
func waitDeviceDeleted(ctx context.Context, q *QMP, sub *Subscription, id string, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := sub.Wait(wctx, func(ev Event) bool {
		var d struct {
			Device string `json:"device"`
		}
		return json.Unmarshal(ev.Data, &d) == nil && d.Device == id
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("waiting for DEVICE_DELETED: %w", err)
	}
	present, perr := hasDevice(ctx, q, id)
	if perr != nil {
		return fmt.Errorf("waiting for DEVICE_DELETED: %w", perr)
	}
	if present {
		return fmt.Errorf("the guest did not release the device within %v (it must have booted and support PCI hotplug); the NIC stays attached, and detaching again waits for the guest once more", timeout)
	}
	return nil
}

// hasDevice reports whether /machine/peripheral has a device with id id.
func hasDevice(ctx context.Context, q *QMP, id string) (bool, error) {
	props, err := commands(ctx, q).QomList("/machine/peripheral")
	if err != nil {
		return false, err
	}
	for _, p := range props {
		if p.Name == id {
			return true, nil
		}
	}
	return false, nil
}

// hasChardev reports whether QEMU has a chardev labelled id.
func hasChardev(ctx context.Context, q *QMP, id string) (bool, error) {
	chardevs, err := commands(ctx, q).QueryChardev()
	if err != nil {
		return false, err
	}
	for _, c := range chardevs {
		if c.Label == id {
			return true, nil
		}
	}
	return false, nil
}

// removeChardev removes chardev id if it is still there.
func removeChardev(ctx context.Context, q *QMP, id string) error {
	has, err := hasChardev(ctx, q, id)
	if err != nil || !has {
		return err
	}
	return commands(ctx, q).ChardevRemove(id)
}

// deleteNetdev deletes netdev id if it is still there.
func deleteNetdev(ctx context.Context, q *QMP, id string) error {
	err := commands(ctx, q).NetdevDel(id)
	if IsQMPErrorClass(err, QMPDeviceNotFound) {
		return nil
	}
	return err
}
