package tapexport

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/), the fields
// tap can fill. Header values are never known: the names go in the custom
// field _headerNames, never as headers with made-up values.
type (
	HAR struct {
		Log HARLog `json:"log"`
	}
	HARLog struct {
		Version string     `json:"version"`
		Creator HARCreator `json:"creator"`
		Entries []HAREntry `json:"entries"`
	}
	HARCreator struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	HAREntry struct {
		StartedDateTime string      `json:"startedDateTime"`
		Time            float64     `json:"time"`
		Request         HARRequest  `json:"request"`
		Response        HARResponse `json:"response"`
		Cache           struct{}    `json:"cache"`
		Timings         HARTimings  `json:"timings"`
		ServerIPAddress string      `json:"serverIPAddress,omitempty"`
		Trellis         HARTrellis  `json:"_trellis"`
	}
	HARNameValue struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	HARRequest struct {
		Method      string         `json:"method"`
		URL         string         `json:"url"`
		HTTPVersion string         `json:"httpVersion"`
		Cookies     []HARNameValue `json:"cookies"`
		Headers     []HARNameValue `json:"headers"`
		QueryString []HARNameValue `json:"queryString"`
		PostData    *HARPostData   `json:"postData,omitempty"`
		HeadersSize int64          `json:"headersSize"`
		BodySize    int64          `json:"bodySize"`
		HeaderNames []string       `json:"_headerNames,omitempty"`
	}
	HARPostData struct {
		MimeType  string `json:"mimeType"`
		Text      string `json:"text"`
		Encoding  string `json:"_encoding,omitempty"`
		Truncated bool   `json:"_truncated,omitempty"`
	}
	HARResponse struct {
		Status      int            `json:"status"`
		StatusText  string         `json:"statusText"`
		HTTPVersion string         `json:"httpVersion"`
		Cookies     []HARNameValue `json:"cookies"`
		Headers     []HARNameValue `json:"headers"`
		Content     HARContent     `json:"content"`
		RedirectURL string         `json:"redirectURL"`
		HeadersSize int64          `json:"headersSize"`
		BodySize    int64          `json:"bodySize"`
		HeaderNames []string       `json:"_headerNames,omitempty"`
	}
	HARContent struct {
		Size      int64  `json:"size"`
		MimeType  string `json:"mimeType"`
		Text      string `json:"text,omitempty"`
		Encoding  string `json:"encoding,omitempty"`
		Truncated bool   `json:"_truncated,omitempty"`
	}
	HARTimings struct {
		Send    float64 `json:"send"`
		Wait    float64 `json:"wait"`
		Receive float64 `json:"receive"`
	}
	// HARTrellis is what a mesh knows beyond HTTP.
	HARTrellis struct {
		Pod                 string `json:"pod,omitempty"`
		Namespace           string `json:"namespace,omitempty"`
		Direction           string `json:"direction,omitempty"`
		Source              string `json:"source,omitempty"`
		Destination         string `json:"destination,omitempty"`
		SourceIdentity      string `json:"sourceIdentity,omitempty"`
		DestinationIdentity string `json:"destinationIdentity,omitempty"`
		TLS                 bool   `json:"tls"`
		Route               string `json:"route,omitempty"`
		GRPCStatus          *int32 `json:"grpcStatus,omitempty"`
		Error               string `json:"error,omitempty"`
	}
)

const unknownMime = "application/octet-stream"

// HAREntryOf converts one exchange.
func HAREntryOf(x *Exchange) HAREntry {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	scheme := x.Scheme
	if scheme == "" {
		scheme = "http"
	}
	// Tap does not say which HTTP version a request used; gRPC is HTTP/2.
	httpVersion := "HTTP/1.1"
	if x.GRPCStatus >= 0 {
		httpVersion = "HTTP/2"
	}
	e := HAREntry{
		StartedDateTime: x.Start.UTC().Format(time.RFC3339Nano),
		Time:            ms(x.Duration),
		Request: HARRequest{
			Method: x.Method, URL: scheme + "://" + x.Authority + x.Path, HTTPVersion: httpVersion,
			Cookies: []HARNameValue{}, Headers: []HARNameValue{}, QueryString: []HARNameValue{},
			HeadersSize: -1, BodySize: int64(x.RequestBytes), HeaderNames: x.RequestHeaderNames,
		},
		Response: HARResponse{
			Status: int(x.Status), StatusText: http.StatusText(int(x.Status)), HTTPVersion: httpVersion,
			Cookies: []HARNameValue{}, Headers: []HARNameValue{}, RedirectURL: "",
			HeadersSize: -1, BodySize: int64(x.ResponseBytes), HeaderNames: x.ResponseHeaderNames,
			Content: HARContent{Size: int64(x.ResponseBytes), MimeType: unknownMime},
		},
		Timings: HARTimings{Send: 0, Wait: ms(x.TimeToHeaders), Receive: ms(max(x.Duration-x.TimeToHeaders, 0))},
		Trellis: HARTrellis{Pod: x.Pod, Namespace: x.Namespace, Direction: x.Direction, Source: x.Source, Destination: x.Destination,
			SourceIdentity: x.SourceIdentity, DestinationIdentity: x.DestinationIdentity, TLS: x.TLS, Route: x.Route, Error: x.Error},
	}
	if x.GRPCStatus >= 0 {
		g := x.GRPCStatus
		e.Trellis.GRPCStatus = &g
	}
	if i := strings.IndexByte(x.Path, '?'); i >= 0 {
		e.Request.QueryString = query(x.Path[i+1:])
	}
	if x.RequestBody != nil {
		text, enc := bodyText(x.RequestBody)
		e.Request.PostData = &HARPostData{MimeType: unknownMime, Text: text, Encoding: enc, Truncated: x.RequestBodyTruncated}
	}
	if x.ResponseBody != nil {
		e.Response.Content.Text, e.Response.Content.Encoding = bodyText(x.ResponseBody)
		e.Response.Content.Truncated = x.ResponseBodyTruncated
	}
	return e
}

// query splits a query string as it was sent (no unescaping: HAR keeps
// what was on the wire).
func query(q string) []HARNameValue {
	out := []HARNameValue{}
	for _, kv := range strings.Split(q, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		out = append(out, HARNameValue{Name: k, Value: v})
	}
	return out
}

func bodyText(b []byte) (text, encoding string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

// WriteHAR writes the exchanges as one HAR 1.2 document.
func WriteHAR(w io.Writer, creatorVersion string, xs []*Exchange) error {
	h := HAR{Log: HARLog{Version: "1.2", Creator: HARCreator{Name: "trellis tap", Version: creatorVersion}, Entries: []HAREntry{}}}
	for _, x := range xs {
		h.Log.Entries = append(h.Log.Entries, HAREntryOf(x))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(h)
}
