package tapexport

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// pcapng (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html):
// a Section Header, one Interface Description with link type RAW (IPv4 or
// IPv6 packets, no link layer), and one Enhanced Packet per TCP segment.
// Each exchange becomes one TCP connection between its source and
// destination address: the handshake, the request, the response, the
// close, as HTTP/1.1 whatever the app spoke (Wireshark follows it as a TCP
// stream and dissects it as HTTP). Only what tap knows is written: the
// request line, Host, and a header naming what is not there; bodies only
// when the tap captured them.
const (
	blockSHB     = 0x0A0D0D0A
	blockIDB     = 0x00000001
	blockEPB     = 0x00000006
	byteOrder    = 0x1A2B3C4D
	linkTypeRaw  = 101
	snapLen      = 0
	maxSegment   = 1400
	tcpFIN       = 0x01
	tcpSYN       = 0x02
	tcpPSH       = 0x08
	tcpACK       = 0x10
	optEndOfOpts = 0
	optIfTsResol = 9
)

// PcapWriter writes exchanges to a pcapng stream.
type PcapWriter struct {
	w   *bufio.Writer
	err error
	n   uint32 // exchanges written: each connection's initial sequence numbers
}

// NewPcapWriter writes the section and interface headers.
func NewPcapWriter(w io.Writer) (*PcapWriter, error) {
	p := &PcapWriter{w: bufio.NewWriter(w)}
	shb := make([]byte, 16)
	binary.LittleEndian.PutUint32(shb[0:], byteOrder)
	binary.LittleEndian.PutUint16(shb[4:], 1) // version 1.0
	binary.LittleEndian.PutUint64(shb[8:], ^uint64(0))
	p.block(blockSHB, shb)
	idb := make([]byte, 8, 20)
	binary.LittleEndian.PutUint16(idb[0:], linkTypeRaw)
	binary.LittleEndian.PutUint32(idb[4:], snapLen)
	// if_tsresol 6: microseconds (the default, said explicitly).
	idb = append(idb, optIfTsResol, 0, 1, 0, 6, 0, 0, 0, optEndOfOpts, 0, 0, 0)
	p.block(blockIDB, idb)
	return p, p.err
}

func (p *PcapWriter) block(typ uint32, body []byte) {
	if p.err != nil {
		return
	}
	pad := (4 - len(body)%4) % 4
	total := uint32(12 + len(body) + pad)
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[0:], typ)
	binary.LittleEndian.PutUint32(hdr[4:], total)
	p.w.Write(hdr[:])
	p.w.Write(body)
	p.w.Write(make([]byte, pad))
	var tail [4]byte
	binary.LittleEndian.PutUint32(tail[:], total)
	_, p.err = p.w.Write(tail[:])
}

func (p *PcapWriter) packet(at time.Time, pkt []byte) {
	body := make([]byte, 20, 20+len(pkt))
	us := uint64(at.UnixMicro())
	binary.LittleEndian.PutUint32(body[4:], uint32(us>>32))
	binary.LittleEndian.PutUint32(body[8:], uint32(us))
	binary.LittleEndian.PutUint32(body[12:], uint32(len(pkt)))
	binary.LittleEndian.PutUint32(body[16:], uint32(len(pkt)))
	p.block(blockEPB, append(body, pkt...))
}

// Flush writes what is buffered.
func (p *PcapWriter) Flush() error {
	if p.err != nil {
		return p.err
	}
	return p.w.Flush()
}

// endpoints are the exchange's addresses; an address tap did not give (or
// an unparsable one) becomes one of the documentation ranges.
func endpoints(x *Exchange) (src, dst netip.AddrPort) {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%s/%s", x.Namespace, x.Pod, x.Start)
	port := uint16(32768 + h.Sum32()%28000)
	src, err := netip.ParseAddrPort(x.Source)
	if err != nil {
		src = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)
	}
	dst, err = netip.ParseAddrPort(x.Destination)
	if err != nil {
		dst = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), 80)
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if src.Addr().Is4() != dst.Addr().Is4() {
		// One packet has one IP version: both as IPv6 (IPv4-mapped).
		src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	return src, dst
}

// RequestBytes is the HTTP/1.1 request written for x.
func RequestBytes(x *Exchange) []byte {
	var b strings.Builder
	method, path := x.Method, x.Path
	if method == "" {
		method = "GET"
	}
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", token(method), requestTarget(path))
	if x.Authority != "" {
		fmt.Fprintf(&b, "Host: %s\r\n", keep(x.Authority, "-._~:[]!$&'()*+,;=%@"))
	}
	writeTapHeaders(&b, x.RequestHeaderNames, x.RequestBytes, x.RequestBody, x.RequestBodyTruncated)
	return append([]byte(b.String()), x.RequestBody...)
}

// ResponseBytes is the HTTP/1.1 response written for x.
func ResponseBytes(x *Exchange) []byte {
	var b strings.Builder
	status := int(x.Status)
	if status < 100 || status > 999 {
		status = 502 // no response head: what a proxy answers then
	}
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	if x.GRPCStatus >= 0 {
		fmt.Fprintf(&b, "X-Trellis-Grpc-Status: %d\r\n", x.GRPCStatus)
	}
	if x.Error != "" {
		fmt.Fprintf(&b, "X-Trellis-Error: %s\r\n", clean(x.Error))
	}
	writeTapHeaders(&b, x.ResponseHeaderNames, x.ResponseBytes, x.ResponseBody, x.ResponseBodyTruncated)
	return append([]byte(b.String()), x.ResponseBody...)
}

// writeTapHeaders: Content-Length of what follows (the captured body, or
// nothing), and what tap knew about the rest, values never included.
func writeTapHeaders(b *strings.Builder, names []string, n uint64, body []byte, truncated bool) {
	fmt.Fprintf(b, "Content-Length: %d\r\n", len(body))
	if len(names) > 0 {
		var ok []string
		for _, h := range names {
			ok = append(ok, token(h))
		}
		fmt.Fprintf(b, "X-Trellis-Header-Names: %s\r\n", strings.Join(ok, ", "))
	}
	switch {
	case body == nil && n > 0:
		fmt.Fprintf(b, "X-Trellis-Body: not captured, %d bytes\r\n", n)
	case truncated:
		fmt.Fprintf(b, "X-Trellis-Body: truncated to %d of %d bytes\r\n", len(body), n)
	}
	b.WriteString("\r\n")
}

// requestTarget makes path a valid origin-form target: it starts with
// "/", and bytes outside RFC 3986's sets are percent-encoded ("%" too,
// unless it already starts an escape).
func requestTarget(path string) string {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '%' && i+2 < len(path) && ishex(path[i+1]) && ishex(path[i+2]):
			b.WriteByte(c)
		case c > ' ' && c < 0x7f && c != '%' && c != '"' && c != '<' && c != '>' && c != '\\' && c != '^' && c != '`' && c != '{' && c != '|' && c != '}' && c != '#':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// keep keeps letters, digits and the given ASCII punctuation; anything
// else becomes '_'.
func keep(s, punct string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(punct, r)) {
			return r
		}
		return '_'
	}, s)
}

// token keeps an HTTP token's characters; anything else becomes '_'.
func token(s string) string {
	return strings.Map(func(r rune) rune {
		if r > ' ' && r < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return r
		}
		return '_'
	}, s)
}

// clean keeps a header value on its line, in ASCII.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r >= 0x7f {
			return ' '
		}
		return r
	}, s)
}

// Write adds one exchange as a TCP connection.
func (p *PcapWriter) Write(x *Exchange) error {
	src, dst := endpoints(x)
	start := x.Start
	if start.IsZero() {
		start = time.Now()
	}
	// Mesh connections are long-lived: many exchanges share one address
	// pair. Distinct initial sequence numbers make each a new connection
	// to Wireshark ("port numbers reused"), not a retransmission.
	p.n++
	isn := p.n * 0x01000193
	c := &tcpConn{p: p, a: src, b: dst, seqA: isn, seqB: ^isn}
	c.send(start, true, tcpSYN, nil)
	c.send(start, false, tcpSYN|tcpACK, nil)
	c.send(start, true, tcpACK, nil)
	c.data(start, true, RequestBytes(x))
	respAt := start.Add(x.TimeToHeaders)
	c.data(respAt, false, ResponseBytes(x))
	end := start.Add(max(x.Duration, x.TimeToHeaders))
	c.send(end, false, tcpFIN|tcpACK, nil)
	c.send(end, true, tcpFIN|tcpACK, nil)
	c.send(end, false, tcpACK, nil)
	return p.err
}

// tcpConn numbers the segments of one synthetic connection.
type tcpConn struct {
	p          *PcapWriter
	a, b       netip.AddrPort
	seqA, seqB uint32
}

func (c *tcpConn) data(at time.Time, fromA bool, payload []byte) {
	for len(payload) > 0 {
		n := min(len(payload), maxSegment)
		c.send(at, fromA, tcpACK|tcpPSH, payload[:n])
		payload = payload[n:]
	}
}

func (c *tcpConn) send(at time.Time, fromA bool, flags byte, payload []byte) {
	src, dst, seq, ack := c.a, c.b, &c.seqA, c.seqB
	if !fromA {
		src, dst, seq, ack = c.b, c.a, &c.seqB, c.seqA
	}
	if flags&tcpACK == 0 {
		ack = 0
	}
	c.p.packet(at, ipPacket(src, dst, tcpSegment(src, dst, *seq, ack, flags, payload)))
	*seq += uint32(len(payload))
	if flags&(tcpSYN|tcpFIN) != 0 {
		*seq++
	}
}

func tcpSegment(src, dst netip.AddrPort, seq, ack uint32, flags byte, payload []byte) []byte {
	seg := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint32(seg[4:], seq)
	binary.BigEndian.PutUint32(seg[8:], ack)
	seg[12] = 5 << 4
	seg[13] = flags
	binary.BigEndian.PutUint16(seg[14:], 65535)
	seg = append(seg, payload...)
	binary.BigEndian.PutUint16(seg[16:], checksum(pseudoHeader(src.Addr(), dst.Addr(), len(seg)), seg))
	return seg
}

func pseudoHeader(src, dst netip.Addr, n int) []byte {
	var ph []byte
	ph = append(ph, src.AsSlice()...)
	ph = append(ph, dst.AsSlice()...)
	if src.Is4() {
		return append(ph, 0, 6, byte(n>>8), byte(n))
	}
	return append(ph, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, 6)
}

func ipPacket(src, dst netip.AddrPort, seg []byte) []byte {
	if src.Addr().Is4() {
		h := make([]byte, 20, 20+len(seg))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(seg)))
		h[6] = 0x40 // don't fragment
		h[8] = 64
		h[9] = 6
		copy(h[12:], src.Addr().AsSlice())
		copy(h[16:], dst.Addr().AsSlice())
		binary.BigEndian.PutUint16(h[10:], checksum(nil, h))
		return append(h, seg...)
	}
	h := make([]byte, 40, 40+len(seg))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(seg)))
	h[6] = 6
	h[7] = 64
	copy(h[8:], src.Addr().AsSlice())
	copy(h[24:], dst.Addr().AsSlice())
	return append(h, seg...)
}

// checksum is the Internet checksum of pre and data (RFC 1071).
func checksum(pre, data []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(pre) // always even length
	add(data)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
