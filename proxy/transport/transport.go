// Package transport encodes and decodes the opaque transport header that a
// client proxy writes at the start of a "trellis-opaque/1" TLS connection
// (see docs/architecture.md): "TRLS", version 1, target port (u16 BE),
// authority length (u16 BE), authority bytes (at most 1024).
package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ALPN protocol names negotiated between proxies.
const (
	ALPNOpaque = "trellis-opaque/1"
	ALPNHTTP   = "h2"
)

const (
	// Magic starts every transport header.
	Magic = "TRLS"
	// Version is the only header version this package speaks.
	Version = 1
	// MaxAuthority bounds the authority so a peer cannot make us buffer much.
	MaxAuthority = 1024

	fixedLen = len(Magic) + 1 + 2 + 2
)

// Errors returned by ReadHeader; test with errors.Is.
var (
	ErrBadMagic         = errors.New("transport header: bad magic")
	ErrUnknownVersion   = errors.New("transport header: unknown version")
	ErrAuthorityTooLong = errors.New("transport header: authority too long")
	ErrZeroPort         = errors.New("transport header: port 0")
)

// Header is what the inbound proxy needs to route an opaque stream.
type Header struct {
	// Port is the target port on the server side; 0 is invalid on the wire.
	Port uint16
	// Authority is the optional logical destination (e.g. "svc.ns:80").
	Authority string
}

// Append appends the encoded header to b.
func (h Header) Append(b []byte) ([]byte, error) {
	if len(h.Authority) > MaxAuthority {
		return b, fmt.Errorf("%w: %d bytes (max %d)", ErrAuthorityTooLong, len(h.Authority), MaxAuthority)
	}
	if h.Port == 0 {
		return b, ErrZeroPort
	}
	b = append(b, Magic...)
	b = append(b, Version)
	b = binary.BigEndian.AppendUint16(b, h.Port)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Authority)))
	b = append(b, h.Authority...)
	return b, nil
}

// ReadHeader reads exactly one header from r. It never reads past the
// header: the fixed part is read first, then exactly the declared authority
// length, so the bytes that follow stay in r for the stream itself.
func ReadHeader(r io.Reader) (Header, error) {
	var fixed [fixedLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Header{}, fmt.Errorf("transport header: reading: %w", err)
	}
	if string(fixed[:4]) != Magic {
		return Header{}, fmt.Errorf("%w: %q", ErrBadMagic, fixed[:4])
	}
	if fixed[4] != Version {
		return Header{}, fmt.Errorf("%w: %d", ErrUnknownVersion, fixed[4])
	}
	port := binary.BigEndian.Uint16(fixed[5:7])
	n := int(binary.BigEndian.Uint16(fixed[7:9]))
	if n > MaxAuthority {
		return Header{}, fmt.Errorf("%w: %d bytes (max %d)", ErrAuthorityTooLong, n, MaxAuthority)
	}
	if port == 0 {
		return Header{}, ErrZeroPort
	}
	h := Header{Port: port}
	if n > 0 {
		auth := make([]byte, n)
		if _, err := io.ReadFull(r, auth); err != nil {
			return Header{}, fmt.Errorf("transport header: reading authority: %w", err)
		}
		h.Authority = string(auth)
	}
	return h, nil
}
