//go:build linux

package qemu

import (
	"errors"
	"fmt"
)

// QMP error classes QEMU uses (qapi/error.json).
const (
	QMPGenericError    = "GenericError"
	QMPCommandNotFound = "CommandNotFound"
	QMPDeviceNotFound  = "DeviceNotFound"
)

// QMPError is an error QEMU returned for a command.
type QMPError struct {
	// Command is the command that failed.
	Command string
	// Class is QEMU's error class, e.g. QMPGenericError.
	Class string
	// Desc is QEMU's description of the error, meant for humans.
	Desc string
}

// Error returns the command, QEMU's description and the class.
func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// IsQMPErrorClass reports whether err is (or wraps) a *QMPError of class.
func IsQMPErrorClass(err error, class string) bool {
	var qe *QMPError
	return errors.As(err, &qe) && qe.Class == class
}
