package vhost

import (
	"encoding/binary"
	"fmt"

	"github.com/sirupsen/logrus"
)

// The virtio-net config space (vhost-user.rst, GET_CONFIG and SET_CONFIG;
// virtio 1.2, 5.1.4 "Device configuration layout").
//
// QEMU's virtio-net keeps its own config space and does not negotiate the
// CONFIG protocol feature for it; other frontends (a vhost-user-net device
// that asks its backend, tests) may. The layout, little-endian:
//
//	offset  0  mac[6]
//	offset  6  status                           u16  VIRTIO_NET_S_LINK_UP
//	offset  8  max_virtqueue_pairs              u16  the port's queue pairs
//	offset 10  mtu                              u16  the MTU in force, else 1500
//	offset 12  speed                            u32  unknown (0xffffffff)
//	offset 16  duplex                           u8   unknown (0xff)
//	offset 17  rss_max_key_size                 u8   0 (no RSS)
//	offset 18  rss_max_indirection_table_length u16  0
//	offset 20  supported_hash_types             u32  0
//
// Every field is read-only for the driver of a virtio 1.x device (the MAC
// of a legacy one is set through the control queue, which vhostd does not
// offer), so SET_CONFIG is refused unless it carries the live-migration
// flag, as vhost-user.rst asks ("back-ends MUST NOT accept SET_CONFIG for
// read-only configuration space fields unless the live migration bit is
// set"): then the bytes written are what GET_CONFIG reports from then on.

const (
	// configHeaderSize is the fixed part of the config payload: u32
	// offset, u32 size, u32 flags.
	configHeaderSize = 12
	// maxConfigSize is VHOST_USER_MAX_CONFIG_SIZE: the most bytes one
	// config message may carry.
	maxConfigSize = 256
	// netConfigSize is the size of vhostd's virtio-net config space.
	netConfigSize = 24
	// configFlagMigration marks a SET_CONFIG sent for live migration.
	configFlagMigration = 1

	netStatusLinkUp = 1
)

// netConfig is what the frontend wrote into the config space with the
// migration flag: the bytes, and which of them were written.
type netConfig struct {
	b       [netConfigSize]byte
	written [netConfigSize]bool
}

// configMsg is the payload of GET_CONFIG and SET_CONFIG.
type configMsg struct {
	Offset, Size, Flags uint32
	Data                []byte
}

// config decodes and checks a config payload: a header whose size matches
// the bytes that follow, within VHOST_USER_MAX_CONFIG_SIZE. A payload that
// contradicts itself is a protocol error.
func (m *Message) config() (configMsg, error) {
	p := m.Payload
	c := configMsg{
		Offset: binary.LittleEndian.Uint32(p[0:]),
		Size:   binary.LittleEndian.Uint32(p[4:]),
		Flags:  binary.LittleEndian.Uint32(p[8:]),
		Data:   p[configHeaderSize:],
	}
	if c.Size > maxConfigSize {
		return c, fmt.Errorf("config access of %d bytes: at most %d", c.Size, maxConfigSize)
	}
	if int(c.Size) != len(c.Data) {
		return c, fmt.Errorf("config access of %d bytes carries %d", c.Size, len(c.Data))
	}
	return c, nil
}

// inRange reports whether the access lies within the config space.
func (c configMsg) inRange() bool {
	return c.Size > 0 && uint64(c.Offset)+uint64(c.Size) <= netConfigSize
}

// configSpace returns the config space as the driver would read it.
func (d *device) configSpace() [netConfigSize]byte {
	var b [netConfigSize]byte
	copy(b[0:6], d.net.mac[:])
	binary.LittleEndian.PutUint16(b[6:], netStatusLinkUp)
	binary.LittleEndian.PutUint16(b[8:], uint16(d.pairs))
	mtu := d.net.mtu
	if mtu == 0 {
		mtu = DefaultMTU
	}
	binary.LittleEndian.PutUint16(b[10:], uint16(mtu))
	binary.LittleEndian.PutUint32(b[12:], 0xffffffff)
	b[16] = 0xff
	for i, w := range d.net.written.written {
		if w {
			b[i] = d.net.written.b[i]
		}
	}
	return b
}

// getConfig serves GET_CONFIG. An access outside the config space is
// answered with an empty payload, which vhost-user.rst defines as the
// error reply ("vhost-user back-end uses zero length of payload to
// indicate an error"); the connection stays.
func (d *device) getConfig(m *Message) ([]byte, error) {
	c, err := m.config()
	if err != nil {
		return nil, err
	}
	if !c.inRange() {
		d.log.WithFields(logrus.Fields{"offset": c.Offset, "size": c.Size, "config_size": netConfigSize}).
			Warn("GET_CONFIG outside the config space: answered with an empty payload (an error)")
		return []byte{}, nil
	}
	space := d.configSpace()
	reply := make([]byte, configHeaderSize+int(c.Size))
	copy(reply, m.Payload[:configHeaderSize])
	copy(reply[configHeaderSize:], space[c.Offset:c.Offset+c.Size])
	return reply, nil
}

// setConfig serves SET_CONFIG: refused (NACKed, nothing changed) unless it
// is a live migration's write within the config space.
func (d *device) setConfig(m *Message) error {
	c, err := m.config()
	if err != nil {
		return err
	}
	switch {
	case !c.inRange():
		return &refusal{fmt.Errorf("config write of %d bytes at offset %d: the config space has %d bytes", c.Size, c.Offset, netConfigSize)}
	case c.Flags == configFlagMigration:
	case c.Flags == 0:
		return &refusal{fmt.Errorf("config write of %d bytes at offset %d: every virtio-net config field is read-only for the driver", c.Size, c.Offset)}
	default:
		return &refusal{fmt.Errorf("config write with unknown flags %#x", c.Flags)}
	}
	for i, v := range c.Data {
		d.net.written.b[int(c.Offset)+i] = v
		d.net.written.written[int(c.Offset)+i] = true
	}
	return nil
}
