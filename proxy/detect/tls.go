package detect

import "encoding/binary"

const (
	tlsRecordHeaderLen      = 5
	tlsRecordTypeHandshake  = 0x16
	tlsHandshakeClientHello = 1
	tlsMaxPlaintext         = 16 << 10
	extServerName           = 0
	sniHostName             = 0
)

// matchTLS decides whether b starts with a TLS handshake record and, once
// the whole first record is in, returns the SNI from its ClientHello. A
// record that is too long or a hello that does not parse is still TLS, with
// SNI "".
func matchTLS(b []byte) (match, string) {
	if b[0] != tlsRecordTypeHandshake {
		return no, ""
	}
	if len(b) >= 2 && b[1] != 0x03 {
		return no, ""
	}
	if len(b) >= 3 && b[2] > 0x0f {
		return no, ""
	}
	if len(b) < tlsRecordHeaderLen {
		return needMore, ""
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if n > tlsMaxPlaintext || n == 0 {
		return yes, ""
	}
	if len(b) < tlsRecordHeaderLen+n {
		return needMore, ""
	}
	return yes, ClientHelloSNI(b[tlsRecordHeaderLen : tlsRecordHeaderLen+n])
}

// ClientHelloSNI returns the host_name of the server_name extension of the
// ClientHello handshake message at the start of msg (a record's payload),
// or "" when there is none or msg does not parse. A hello cut short by the
// record boundary is read as far as it goes. Like crypto/tls, a name with a
// trailing dot or a second host_name is treated as malformed.
func ClientHelloSNI(msg []byte) string {
	p := parser(msg)
	typ, ok := p.u8()
	if !ok || typ != tlsHandshakeClientHello {
		return ""
	}
	bodyLen, ok := p.u24()
	if !ok {
		return ""
	}
	if bodyLen < len(p) {
		p = p[:bodyLen]
	}
	// legacy_version, random
	if !p.skip(2 + 32) {
		return ""
	}
	if _, ok := p.vec8(); !ok { // legacy_session_id
		return ""
	}
	if _, ok := p.vec16(); !ok { // cipher_suites
		return ""
	}
	if _, ok := p.vec8(); !ok { // legacy_compression_methods
		return ""
	}
	exts, ok := p.vec16()
	if !ok {
		return ""
	}
	for len(exts) > 0 {
		typ, ok := exts.u16()
		if !ok {
			return ""
		}
		data, ok := exts.vec16()
		if !ok {
			return ""
		}
		if typ == extServerName {
			return serverName(data)
		}
	}
	return ""
}

func serverName(data parser) string {
	list, ok := data.vec16()
	if !ok || len(data) != 0 {
		return ""
	}
	name := ""
	for len(list) > 0 {
		typ, ok := list.u8()
		if !ok {
			return ""
		}
		v, ok := list.vec16()
		if !ok {
			return ""
		}
		if typ != sniHostName {
			continue
		}
		if name != "" || len(v) == 0 {
			return ""
		}
		name = string(v)
	}
	if name == "" || name[len(name)-1] == '.' {
		return ""
	}
	for i := 0; i < len(name); i++ {
		// Printable ASCII only: the name ends up in logs and metric labels.
		if name[i] <= ' ' || name[i] >= 0x7f {
			return ""
		}
	}
	return name
}

// parser reads big-endian TLS vectors from a byte slice, consuming it.
type parser []byte

func (p *parser) u8() (int, bool) {
	if len(*p) < 1 {
		return 0, false
	}
	v := int((*p)[0])
	*p = (*p)[1:]
	return v, true
}

func (p *parser) u16() (int, bool) {
	if len(*p) < 2 {
		return 0, false
	}
	v := int(binary.BigEndian.Uint16(*p))
	*p = (*p)[2:]
	return v, true
}

func (p *parser) u24() (int, bool) {
	if len(*p) < 3 {
		return 0, false
	}
	v := int((*p)[0])<<16 | int((*p)[1])<<8 | int((*p)[2])
	*p = (*p)[3:]
	return v, true
}

func (p *parser) skip(n int) bool {
	if len(*p) < n {
		return false
	}
	*p = (*p)[n:]
	return true
}

func (p *parser) bytes(n int) (parser, bool) {
	if len(*p) < n {
		return nil, false
	}
	v := (*p)[:n]
	*p = (*p)[n:]
	return v, true
}

func (p *parser) vec8() (parser, bool) {
	n, ok := p.u8()
	if !ok {
		return nil, false
	}
	return p.bytes(n)
}

func (p *parser) vec16() (parser, bool) {
	n, ok := p.u16()
	if !ok {
		return nil, false
	}
	return p.bytes(n)
}
