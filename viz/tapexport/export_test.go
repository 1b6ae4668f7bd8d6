package tapexport

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// events makes one request's three tap events, as a proxy sends them.
func events(pod string, id uint64, x Exchange) []*apiv1.TapEvent {
	base := func() *apiv1.TapEvent {
		return &apiv1.TapEvent{Id: id, Pod: pod, Namespace: "demo", Direction: "outbound", Source: x.Source, Destination: x.Destination,
			SourceIdentity: x.SourceIdentity, DestinationIdentity: x.DestinationIdentity, Tls: x.TLS, Time: timestamppb.New(x.Start)}
	}
	req, head, end := base(), base(), base()
	req.Event = &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Method: x.Method, Scheme: x.Scheme, Authority: x.Authority, Path: x.Path, HeaderNames: x.RequestHeaderNames}}
	head.Event = &apiv1.TapEvent_ResponseInit_{ResponseInit: &apiv1.TapEvent_ResponseInit{HttpStatus: x.Status, SinceRequestInit: durationpb.New(x.TimeToHeaders)}}
	end.Event = &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{
		SinceRequestInit: durationpb.New(x.Duration), GrpcStatus: x.GRPCStatus, RequestBytes: x.RequestBytes, ResponseBytes: x.ResponseBytes,
		RequestBody: x.RequestBody, ResponseBody: x.ResponseBody, ResponseBodyTruncated: x.ResponseBodyTruncated, Error: x.Error}}
	return []*apiv1.TapEvent{req, head, end}
}

var t0 = time.Date(2026, 12, 3, 14, 0, 0, 123456000, time.UTC)

func sample() []Exchange {
	big := bytes.Repeat([]byte("0123456789"), 500) // several segments
	return []Exchange{
		{Source: "10.1.0.5:40000", Destination: "10.1.0.9:7001", SourceIdentity: "spiffe://cluster.local/ns/demo/sa/web", TLS: true,
			Start: t0, Method: "GET", Scheme: "http", Authority: "books.demo:7001", Path: "/books?limit=3&x", Status: 200, GRPCStatus: -1,
			TimeToHeaders: 2 * time.Millisecond, Duration: 3 * time.Millisecond, ResponseBytes: 42, RequestHeaderNames: []string{"accept", "authorization"}},
		{Source: "[fd00::1]:40001", Destination: "10.1.0.9:7001", Start: t0.Add(time.Second), Method: "POST", Path: "/authors", Authority: "authors:7002",
			Status: 201, GRPCStatus: -1, TimeToHeaders: time.Millisecond, Duration: 5 * time.Millisecond,
			RequestBytes: 5000, RequestBody: big, ResponseBytes: 70000, ResponseBody: []byte{0xff, 0xfe, 0}, ResponseBodyTruncated: true},
		{Source: "junk", Destination: "", Start: t0.Add(2 * time.Second), Method: "PO ST\r\n", Path: "/a b\r\nX-Evil: 1", Authority: "h\r\nX: y",
			GRPCStatus: 14, Error: "reset\r\nX: z", Duration: time.Millisecond},
	}
}

func assemble(t testing.TB, xs []Exchange) []*Exchange {
	var a Assembler
	var out []*Exchange
	for i, x := range xs {
		for _, ev := range events(fmt.Sprintf("web-%d", i%2), uint64(i), x) {
			if done, ok := a.Add(ev); ok {
				out = append(out, done)
			}
		}
	}
	if len(out) != len(xs) || len(a.Pending()) != 0 {
		t.Fatalf("assembled %d of %d, %d pending", len(out), len(xs), len(a.Pending()))
	}
	return out
}

// TestHARRoundTrip: the file decodes into HAR 1.2's required fields with
// what the events said.
func TestHARRoundTrip(t *testing.T) {
	xs := assemble(t, sample())
	var buf bytes.Buffer
	if err := WriteHAR(&buf, "test", xs); err != nil {
		t.Fatal(err)
	}
	// Required fields, by the spec's names, in a plain map: a schema
	// check independent of the writer's own types.
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	log := doc["log"].(map[string]any)
	if log["version"] != "1.2" || log["creator"].(map[string]any)["name"] == "" {
		t.Fatalf("log %v", log)
	}
	entries := log["entries"].([]any)
	if len(entries) != len(xs) {
		t.Fatalf("%d entries", len(entries))
	}
	for i, e := range entries {
		e := e.(map[string]any)
		for _, k := range []string{"startedDateTime", "time", "request", "response", "cache", "timings"} {
			if _, ok := e[k]; !ok {
				t.Errorf("entry %d lacks %s", i, k)
			}
		}
		req, resp := e["request"].(map[string]any), e["response"].(map[string]any)
		for _, k := range []string{"method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize", "bodySize"} {
			if _, ok := req[k]; !ok {
				t.Errorf("entry %d request lacks %s", i, k)
			}
		}
		for _, k := range []string{"status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL", "headersSize", "bodySize"} {
			if _, ok := resp[k]; !ok {
				t.Errorf("entry %d response lacks %s", i, k)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, e["startedDateTime"].(string)); err != nil {
			t.Errorf("startedDateTime: %v", err)
		}
		if len(req["headers"].([]any)) != 0 || len(resp["headers"].([]any)) != 0 {
			t.Errorf("entry %d has header values", i)
		}
	}
	var h HAR
	if err := json.Unmarshal(buf.Bytes(), &h); err != nil {
		t.Fatal(err)
	}
	e0, e1 := h.Log.Entries[0], h.Log.Entries[1]
	if e0.Request.URL != "http://books.demo:7001/books?limit=3&x" || len(e0.Request.QueryString) != 2 || e0.Response.Status != 200 || e0.Time != 3 {
		t.Errorf("entry 0: %+v", e0)
	}
	if e0.Trellis.SourceIdentity != "spiffe://cluster.local/ns/demo/sa/web" || !e0.Trellis.TLS || e0.Trellis.Pod != "web-0" {
		t.Errorf("entry 0 mesh fields: %+v", e0.Trellis)
	}
	if e1.Request.PostData == nil || e1.Request.PostData.Text != string(sample()[1].RequestBody) {
		t.Errorf("entry 1 request body not kept")
	}
	if got, _ := base64.StdEncoding.DecodeString(e1.Response.Content.Text); e1.Response.Content.Encoding != "base64" || !bytes.Equal(got, []byte{0xff, 0xfe, 0}) || !e1.Response.Content.Truncated {
		t.Errorf("entry 1 binary response body: %+v", e1.Response.Content)
	}
	if e0.Request.PostData != nil || e0.Response.Content.Text != "" {
		t.Errorf("entry 0 has a body it never captured")
	}
}

// pcap is what the test's own pcapng reader got back.
type pcap struct {
	linkType uint16
	packets  []pcapPacket
}

type pcapPacket struct {
	at   time.Time
	data []byte
}

func readPcapng(t testing.TB, b []byte) pcap {
	t.Helper()
	var p pcap
	for len(b) > 0 {
		if len(b) < 12 {
			t.Fatalf("trailing %d bytes", len(b))
		}
		typ, n := binary.LittleEndian.Uint32(b), int(binary.LittleEndian.Uint32(b[4:]))
		if n < 12 || n%4 != 0 || n > len(b) || int(binary.LittleEndian.Uint32(b[n-4:])) != n {
			t.Fatalf("block %#x length %d", typ, n)
		}
		body := b[8 : n-4]
		switch typ {
		case blockSHB:
			if binary.LittleEndian.Uint32(body) != byteOrder {
				t.Fatal("byte-order magic")
			}
		case blockIDB:
			p.linkType = binary.LittleEndian.Uint16(body)
		case blockEPB:
			us := uint64(binary.LittleEndian.Uint32(body[4:]))<<32 | uint64(binary.LittleEndian.Uint32(body[8:]))
			capLen := binary.LittleEndian.Uint32(body[12:])
			p.packets = append(p.packets, pcapPacket{at: time.UnixMicro(int64(us)), data: body[20 : 20+capLen]})
		default:
			t.Fatalf("block type %#x", typ)
		}
		b = b[n:]
	}
	return p
}

type flow struct{ src, dst netip.AddrPort }

// streams reassembles each direction's TCP payload by sequence number,
// checking IP and TCP checksums on the way.
func streams(t testing.TB, p pcap) (map[flow][]byte, []flow) {
	t.Helper()
	type seg struct {
		seq  uint32
		data []byte
	}
	segs := map[flow][]seg{}
	var order []flow
	for _, pk := range p.packets {
		d := pk.data
		var src, dst netip.Addr
		var tcp []byte
		switch d[0] >> 4 {
		case 4:
			if checksum(nil, d[:20]) != 0 {
				t.Fatal("IPv4 header checksum")
			}
			src, dst = netip.AddrFrom4([4]byte(d[12:16])), netip.AddrFrom4([4]byte(d[16:20]))
			tcp = d[20:binary.BigEndian.Uint16(d[2:])]
		case 6:
			src, dst = netip.AddrFrom16([16]byte(d[8:24])), netip.AddrFrom16([16]byte(d[24:40]))
			tcp = d[40 : 40+binary.BigEndian.Uint16(d[4:])]
		default:
			t.Fatalf("IP version %d", d[0]>>4)
		}
		if checksum(pseudoHeader(src, dst, len(tcp)), tcp) != 0 {
			t.Fatal("TCP checksum")
		}
		f := flow{netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp)), netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:]))}
		if _, ok := segs[f]; !ok {
			order = append(order, f)
			segs[f] = nil
		}
		if payload := tcp[int(tcp[12]>>4)*4:]; len(payload) > 0 {
			segs[f] = append(segs[f], seg{binary.BigEndian.Uint32(tcp[4:]), payload})
		}
	}
	out := map[flow][]byte{}
	for f, ss := range segs {
		sort.Slice(ss, func(i, j int) bool { return ss[i].seq < ss[j].seq })
		var b []byte
		for i, s := range ss {
			if i > 0 && s.seq != ss[i-1].seq+uint32(len(ss[i-1].data)) {
				t.Fatalf("flow %v: gap at seq %d", f, s.seq)
			}
			b = append(b, s.data...)
		}
		out[f] = b
	}
	return out, order
}

// TestPcapngRoundTrip: read back with the test's reader, every exchange
// is a TCP connection whose payloads parse as its HTTP request and
// response, bodies only where captured, and no injected header.
func TestPcapngRoundTrip(t *testing.T) {
	xs := assemble(t, sample())
	var buf bytes.Buffer
	pw, err := NewPcapWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range xs {
		if err := pw.Write(x); err != nil {
			t.Fatal(err)
		}
	}
	if err := pw.Flush(); err != nil {
		t.Fatal(err)
	}
	p := readPcapng(t, buf.Bytes())
	if p.linkType != linkTypeRaw || len(p.packets) < 9*len(xs) {
		t.Fatalf("link type %d, %d packets", p.linkType, len(p.packets))
	}
	if !p.packets[0].at.Equal(t0.Truncate(time.Microsecond)) {
		t.Errorf("first packet at %s, want %s", p.packets[0].at, t0)
	}
	data, order := streams(t, p)
	if len(order) != 2*len(xs) {
		t.Fatalf("%d flows, want %d", len(order), 2*len(xs))
	}
	for i, x := range xs {
		c2s, s2c := order[2*i], order[2*i+1]
		if c2s.src != s2c.dst || c2s.dst != s2c.src {
			t.Fatalf("exchange %d: flows %v %v", i, c2s, s2c)
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data[c2s])))
		if err != nil {
			t.Fatalf("exchange %d: request: %v\n%q", i, err, data[c2s])
		}
		body, _ := io.ReadAll(req.Body)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data[s2c])), req)
		if err != nil {
			t.Fatalf("exchange %d: response: %v", i, err)
		}
		rbody, _ := io.ReadAll(resp.Body)
		if !bytes.Equal(body, x.RequestBody) || !bytes.Equal(rbody, x.ResponseBody) {
			t.Errorf("exchange %d: bodies %d/%d bytes, want %d/%d", i, len(body), len(rbody), len(x.RequestBody), len(x.ResponseBody))
		}
		for _, h := range []string{"X-Evil", "X"} {
			if req.Header.Get(h) != "" || resp.Header.Get(h) != "" {
				t.Errorf("exchange %d: header %s injected", i, h)
			}
		}
		if i < 2 && (req.Method != x.Method || req.URL.RequestURI() != x.Path || req.Host != x.Authority || resp.StatusCode != int(x.Status)) {
			t.Errorf("exchange %d: %s %s %s -> %d", i, req.Method, req.URL.RequestURI(), req.Host, resp.StatusCode)
		}
	}
	if s := string(data[order[0]]); strings.Contains(s, "authorization:") || !strings.Contains(s, "X-Trellis-Header-Names: accept, authorization") {
		t.Errorf("header names: %q", s)
	}
}

func FuzzExports(f *testing.F) {
	f.Add("GET", "/x?y=1", "h:80", "1.2.3.4:5", "[::1]:80", uint32(200), []byte("body"), []byte{0xff}, int64(1000))
	f.Fuzz(func(t *testing.T, method, path, authority, src, dst string, status uint32, reqBody, respBody []byte, durUs int64) {
		x := Exchange{Method: method, Path: path, Authority: authority, Source: src, Destination: dst, Status: status, GRPCStatus: -1,
			Start: t0, Duration: time.Duration(durUs) * time.Microsecond, RequestBody: reqBody, ResponseBody: respBody,
			RequestBytes: uint64(len(reqBody)), ResponseBytes: uint64(len(respBody))}
		xs := assemble(t, []Exchange{x})
		var hb bytes.Buffer
		if err := WriteHAR(&hb, "fuzz", xs); err != nil {
			t.Fatal(err)
		}
		var h HAR
		if err := json.Unmarshal(hb.Bytes(), &h); err != nil || len(h.Log.Entries) != 1 {
			t.Fatalf("HAR does not parse back: %v", err)
		}
		var pb bytes.Buffer
		pw, _ := NewPcapWriter(&pb)
		if err := pw.Write(xs[0]); err != nil {
			t.Fatal(err)
		}
		if err := pw.Flush(); err != nil {
			t.Fatal(err)
		}
		data, order := streams(t, readPcapng(t, pb.Bytes()))
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data[order[0]])))
		if err != nil {
			t.Fatalf("request does not parse: %v\n%q", err, data[order[0]])
		}
		body, _ := io.ReadAll(req.Body)
		if !bytes.Equal(body, reqBody) && !(len(body) == 0 && len(reqBody) == 0) {
			t.Fatalf("request body changed")
		}
		if _, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data[order[1]])), req); err != nil {
			t.Fatalf("response does not parse: %v", err)
		}
	})
}
