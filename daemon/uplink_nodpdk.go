//go:build !cgo

package daemon

import (
	"errors"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
)

// ErrNoDPDK is returned for --uplink by a vhostd built without cgo.
var ErrNoDPDK = errors.New("--uplink: this vhostd was built without DPDK support (CGO_ENABLED=0): rebuild it with cgo and Debian's libdpdk-dev (make build) to use a DPDK uplink")

// uplinkPort stands in for the DPDK uplink (uplink_dpdk.go) in a build
// without cgo: openUplink always fails, so no method is ever called.
type uplinkPort struct{}

func openUplink(config.Config, *logrus.Entry) (*uplinkPort, error) { return nil, ErrNoDPDK }

func (*uplinkPort) switchPort() vswitch.Port  { return nil }
func (*uplinkPort) close() error              { return nil }
func (*uplinkPort) info() *control.UplinkInfo { return nil }
func (*uplinkPort) stats() *control.DPDKStats { return nil }
