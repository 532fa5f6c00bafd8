package vhosttest

import (
	"encoding/binary"
)

// Request codes of the virtio-net and device-status messages.
const (
	SendRARP    = 19
	NetSetMTU   = 20
	GetConfig   = 24
	SetConfig   = 25
	SetStatus   = 39
	GetStatus   = 40
	ConfigFlags = 0 // SET_CONFIG flags of a driver's write
	// ConfigMigration is SET_CONFIG's flag of a live migration's write.
	ConfigMigration = 1
)

// RARPPayload encodes SEND_RARP's u64: the MAC in its first 6 bytes.
func RARPPayload(mac [6]byte) []byte {
	b := make([]byte, 8)
	copy(b, mac[:])
	return b
}

// SendRARP asks the backend to announce mac; with ack it asks for and
// checks a REPLY_ACK.
func (f *Frontend) SendRARP(mac [6]byte, ack bool) error {
	flags := uint32(FlagVersion)
	if ack {
		flags |= FlagNeedReply
	}
	if err := f.Send(SendRARP, flags, RARPPayload(mac)); err != nil {
		return err
	}
	if ack {
		return f.Ack(SendRARP)
	}
	return nil
}

// ConfigPayload encodes the payload of GET_CONFIG and SET_CONFIG: offset,
// size (len(data)), flags, data.
func ConfigPayload(offset, flags uint32, data []byte) []byte {
	b := make([]byte, 12+len(data))
	binary.LittleEndian.PutUint32(b, offset)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(data)))
	binary.LittleEndian.PutUint32(b[8:], flags)
	copy(b[12:], data)
	return b
}

// GetConfig reads size bytes of the config space at offset and returns
// the reply's payload as sent: header and bytes, or empty for an error.
func (f *Frontend) GetConfig(offset, size uint32) ([]byte, error) {
	if err := f.Send(GetConfig, FlagVersion, ConfigPayload(offset, 0, make([]byte, size))); err != nil {
		return nil, err
	}
	return f.Reply(GetConfig)
}
