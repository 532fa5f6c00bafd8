//go:build linux

package qmptest

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Memdev is a memory backend as query-memdev reports it.
type Memdev struct {
	ID    string `json:"id"`
	Size  uint64 `json:"size"`
	Share bool   `json:"share"`
}

// Machine models what hot-plugging a vhost-user NIC touches in QEMU 7.2:
// memory backends (query-memdev, qom-get of "share"), chardevs
// (chardev-add, chardev-remove, query-chardev), netdevs (netdev_add,
// netdev_del, which like QEMU's vhost-user netdev also deletes its
// chardev) and devices (device_add, device_del, qom-list of
// /machine/peripheral), with DEVICE_DELETED sent once the "guest" lets go.
// The error classes and texts are QEMU's.
type Machine struct {
	mu       sync.Mutex // guards the fields below
	memdevs  []Memdev
	chardevs map[string]json.RawMessage // id -> backend
	netdevs  map[string]string          // id -> chardev
	devices  map[string]map[string]any  // id -> device_add arguments
	unplug   time.Duration
	ejecting map[string]*Conn // device_del pending in the guest; the conn that asked
}

// NewMachine returns a machine with the given memory backends and nothing
// plugged in, whose guest releases unplugged devices at once.
func NewMachine(memdevs ...Memdev) *Machine {
	return &Machine{
		memdevs:  memdevs,
		chardevs: make(map[string]json.RawMessage),
		netdevs:  make(map[string]string),
		devices:  make(map[string]map[string]any),
		ejecting: make(map[string]*Conn),
	}
}

// SharedMemory is the memory backend of a guest started with
// qemu.SharedMemoryArgs(256).
var SharedMemory = Memdev{ID: "mem", Size: 256 << 20, Share: true}

// PrivateMemory is the implicit RAM of a guest started with plain -m 256.
var PrivateMemory = Memdev{ID: "pc.ram", Size: 256 << 20, Share: false}

// SetUnplugDelay sets how long the guest takes to release a device after
// device_del; negative means never (a guest without ACPI hotplug).
func (m *Machine) SetUnplugDelay(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unplug = d
}

// Install makes s answer the machine's commands.
func (m *Machine) Install(s *Server) {
	s.Handle("query-memdev", m.queryMemdev)
	s.Handle("qom-get", m.qomGet)
	s.Handle("qom-list", m.qomList)
	s.Handle("chardev-add", m.chardevAdd)
	s.Handle("chardev-remove", m.chardevRemove)
	s.Handle("query-chardev", m.queryChardev)
	s.Handle("netdev_add", m.netdevAdd)
	s.Handle("netdev_del", m.netdevDel)
	s.Handle("device_add", m.deviceAdd)
	s.Handle("device_del", m.deviceDel)
}

// Chardevs returns the ids of the chardevs added over QMP, sorted.
func (m *Machine) Chardevs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return keys(m.chardevs)
}

// Chardev returns the backend a chardev was added with, or nil.
func (m *Machine) Chardev(id string) json.RawMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.chardevs[id]
}

// Netdevs returns the ids of the netdevs, sorted.
func (m *Machine) Netdevs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return keys(m.netdevs)
}

// Devices returns the ids of the devices, sorted.
func (m *Machine) Devices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return keys(m.devices)
}

// Device returns the device_add arguments of device id, or nil.
func (m *Machine) Device(id string) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.devices[id]
}

func keys[V any](mp map[string]V) []string {
	out := make([]string, 0, len(mp))
	for k := range mp {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (m *Machine) queryMemdev(c *Conn, r *Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c.Reply(r, append([]Memdev{}, m.memdevs...))
}

func (m *Machine) qomGet(c *Conn, r *Request) {
	var a struct{ Path, Property string }
	r.Args(&a)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, md := range m.memdevs {
		if a.Path == "/objects/"+md.ID {
			if a.Property != "share" {
				c.Fail(r, "GenericError", fmt.Sprintf("Property '%s.%s' not found", "memory-backend", a.Property))
				return
			}
			c.Reply(r, md.Share)
			return
		}
	}
	c.Fail(r, "DeviceNotFound", fmt.Sprintf("Device '%s' not found", a.Path))
}

func (m *Machine) qomList(c *Conn, r *Request) {
	var a struct{ Path string }
	r.Args(&a)
	type prop struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []prop{{"type", "string"}}
	switch a.Path {
	case "/machine/peripheral":
		for _, id := range keys(m.devices) {
			out = append(out, prop{id, fmt.Sprintf("child<%v>", m.devices[id]["driver"])})
		}
	case "/objects":
		for _, md := range m.memdevs {
			out = append(out, prop{md.ID, "child<memory-backend-memfd>"})
		}
	default:
		c.Fail(r, "DeviceNotFound", fmt.Sprintf("Device '%s' not found", a.Path))
		return
	}
	c.Reply(r, out)
}

func (m *Machine) chardevAdd(c *Conn, r *Request) {
	var a struct {
		ID      string          `json:"id"`
		Backend json.RawMessage `json:"backend"`
	}
	if err := r.Args(&a); err != nil || a.ID == "" || a.Backend == nil {
		c.Fail(r, "GenericError", "Parameter 'id' is missing")
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.chardevs[a.ID]; ok {
		c.Fail(r, "GenericError", fmt.Sprintf("attempt to add duplicate property '%s' to object (type 'container')", a.ID))
		return
	}
	m.chardevs[a.ID] = a.Backend
	c.Reply(r, struct{}{})
}

func (m *Machine) chardevRemove(c *Conn, r *Request) {
	var a struct{ ID string }
	r.Args(&a)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.chardevs[a.ID]; !ok {
		c.Fail(r, "GenericError", fmt.Sprintf("Chardev '%s' not found", a.ID))
		return
	}
	for _, chr := range m.netdevs {
		if chr == a.ID {
			c.Fail(r, "GenericError", fmt.Sprintf("Chardev '%s' is busy", a.ID))
			return
		}
	}
	delete(m.chardevs, a.ID)
	c.Reply(r, struct{}{})
}

func (m *Machine) queryChardev(c *Conn, r *Request) {
	type info struct {
		Label    string `json:"label"`
		Filename string `json:"filename"`
		Open     bool   `json:"frontend-open"`
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []info{{"compat_monitor0", "unix:/tmp/qmp.sock,server=on", true}}
	for _, id := range keys(m.chardevs) {
		out = append(out, info{id, "unix:", true})
	}
	c.Reply(r, out)
}

func (m *Machine) netdevAdd(c *Conn, r *Request) {
	var a struct{ Type, ID, Chardev string }
	r.Args(&a)
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.Type != "vhost-user" {
		c.Fail(r, "GenericError", fmt.Sprintf("qmptest: netdev type %q not modelled", a.Type))
		return
	}
	if _, ok := m.netdevs[a.ID]; ok {
		c.Fail(r, "GenericError", fmt.Sprintf("Duplicate ID '%s' for netdev", a.ID))
		return
	}
	if _, ok := m.chardevs[a.Chardev]; !ok {
		c.Fail(r, "GenericError", fmt.Sprintf("chardev \"%s\" not found", a.Chardev))
		return
	}
	m.netdevs[a.ID] = a.Chardev
	c.Reply(r, struct{}{})
}

func (m *Machine) netdevDel(c *Conn, r *Request) {
	var a struct{ ID string }
	r.Args(&a)
	m.mu.Lock()
	defer m.mu.Unlock()
	chr, ok := m.netdevs[a.ID]
	if !ok {
		c.Fail(r, "DeviceNotFound", fmt.Sprintf("Device '%s' not found", a.ID))
		return
	}
	delete(m.netdevs, a.ID)
	delete(m.chardevs, chr) // QEMU 7.2's vhost-user netdev deletes its chardev
	c.Reply(r, struct{}{})
}

func (m *Machine) deviceAdd(c *Conn, r *Request) {
	var a map[string]any
	r.Args(&a)
	id, _ := a["id"].(string)
	netdev, _ := a["netdev"].(string)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.devices[id]; ok && id != "" {
		c.Fail(r, "GenericError", fmt.Sprintf("Duplicate device ID '%s'", id))
		return
	}
	if _, ok := m.netdevs[netdev]; !ok {
		c.Fail(r, "GenericError", fmt.Sprintf("Property 'virtio-net-device.netdev' can't find value '%s'", netdev))
		return
	}
	m.devices[id] = a
	c.Reply(r, struct{}{})
}

func (m *Machine) deviceDel(c *Conn, r *Request) {
	var a struct{ ID string }
	r.Args(&a)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.devices[a.ID]; !ok {
		c.Fail(r, "DeviceNotFound", fmt.Sprintf("Device '%s' not found", a.ID))
		return
	}
	if m.ejecting[a.ID] != nil {
		c.Fail(r, "GenericError", fmt.Sprintf("Device %s is already in the process of unplug", a.ID))
		return
	}
	m.ejecting[a.ID] = c
	c.Reply(r, struct{}{})
	if m.unplug < 0 {
		return
	}
	id := a.ID
	time.AfterFunc(m.unplug, func() { m.Release(id) })
}

// Release completes a pending device_del of device id, as a guest that lets
// go of it: the device is removed and DEVICE_DELETED sent. It reports
// whether an unplug was pending.
func (m *Machine) Release(id string) bool {
	m.mu.Lock()
	c := m.ejecting[id]
	if c != nil {
		delete(m.devices, id)
		delete(m.ejecting, id)
	}
	m.mu.Unlock()
	if c == nil {
		return false
	}
	// As QEMU 7.2: first the virtio backend child, then the device.
	c.Event("DEVICE_DELETED", map[string]string{"path": "/machine/peripheral/" + id + "/virtio-backend"})
	c.Event("DEVICE_DELETED", map[string]string{"device": id, "path": "/machine/peripheral/" + id})
	return true
}
