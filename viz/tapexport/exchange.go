// Package tapexport turns tap events into files other tools open: HAR 1.2
// (a browser's network panel, HAR viewers) and pcapng (Wireshark), with
// each request's events assembled into one Exchange first. Header values
// are never in tap events, so never in an export; bodies only when the
// tap captured them (its own RBAC verb).
package tapexport

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Exchange is one request and its response as a tap saw them.
type Exchange struct {
	Pod, Namespace, Direction           string
	Source, Destination                 string
	SourceIdentity, DestinationIdentity string
	Route                               string
	TLS                                 bool
	Start                               time.Time
	Method, Scheme, Authority, Path     string
	RequestHeaderNames                  []string
	ResponseHeaderNames                 []string
	// Status 0: no response head was seen.
	Status uint32
	// GRPCStatus -1: none.
	GRPCStatus int32
	// TimeToHeaders: request start to response head; Duration: to the end.
	TimeToHeaders, Duration                     time.Duration
	RequestBytes, ResponseBytes                 uint64
	RequestBody, ResponseBody                   []byte
	RequestBodyTruncated, ResponseBodyTruncated bool
	Error                                       string
	// Complete: the ResponseEnd was seen.
	Complete bool
}

// Assembler groups events by request (pod and the proxy's request id).
// It holds only the requests not ended yet (at most maxOpen), so a tap of
// any length costs bounded memory here.
type Assembler struct {
	open map[string]*openExchange
	// seq numbers requests as they begin: Pending's order.
	seq uint64
}

type openExchange struct {
	*Exchange
	seq uint64
}

func key(ev *apiv1.TapEvent) string {
	return fmt.Sprintf("%s/%s/%d", ev.GetNamespace(), ev.GetPod(), ev.GetId())
}

// maxOpen bounds requests waiting for their end (a stream cut mid-way).
const maxOpen = 10000

// Add takes one event; it returns the exchange when ev ended it.
func (a *Assembler) Add(ev *apiv1.TapEvent) (*Exchange, bool) {
	if a.open == nil {
		a.open = map[string]*openExchange{}
	}
	k := key(ev)
	o := a.open[k]
	if o == nil {
		if len(a.open) >= maxOpen {
			return nil, false
		}
		a.seq++
		o = &openExchange{Exchange: &Exchange{Pod: ev.GetPod(), Namespace: ev.GetNamespace(), Direction: ev.GetDirection(), GRPCStatus: -1}, seq: a.seq}
		a.open[k] = o
	}
	x := o.Exchange
	x.Source, x.Destination = orStr(ev.GetSource(), x.Source), orStr(ev.GetDestination(), x.Destination)
	x.SourceIdentity, x.DestinationIdentity = orStr(ev.GetSourceIdentity(), x.SourceIdentity), orStr(ev.GetDestinationIdentity(), x.DestinationIdentity)
	x.Route, x.TLS = orStr(ev.GetRoute(), x.Route), x.TLS || ev.GetTls()
	switch e := ev.GetEvent().(type) {
	case *apiv1.TapEvent_RequestInit_:
		r := e.RequestInit
		x.Method, x.Scheme, x.Authority, x.Path = r.GetMethod(), r.GetScheme(), r.GetAuthority(), r.GetPath()
		x.RequestHeaderNames = r.GetHeaderNames()
		if ev.GetTime() != nil {
			x.Start = ev.GetTime().AsTime()
		}
	case *apiv1.TapEvent_ResponseInit_:
		x.Status = e.ResponseInit.GetHttpStatus()
		x.ResponseHeaderNames = e.ResponseInit.GetHeaderNames()
		x.TimeToHeaders = e.ResponseInit.GetSinceRequestInit().AsDuration()
	case *apiv1.TapEvent_ResponseEnd_:
		r := e.ResponseEnd
		x.Duration = r.GetSinceRequestInit().AsDuration()
		x.GRPCStatus, x.Error = r.GetGrpcStatus(), r.GetError()
		x.RequestBytes, x.ResponseBytes = r.GetRequestBytes(), r.GetResponseBytes()
		x.RequestBody, x.ResponseBody = r.GetRequestBody(), r.GetResponseBody()
		x.RequestBodyTruncated, x.ResponseBodyTruncated = r.GetRequestBodyTruncated(), r.GetResponseBodyTruncated()
		x.Complete = true
		delete(a.open, k)
		return x, true
	}
	return nil, false
}

// Pending returns the exchanges not ended, in the order they began.
func (a *Assembler) Pending() []*Exchange {
	open := make([]*openExchange, 0, len(a.open))
	for _, o := range a.open {
		open = append(open, o)
	}
	slices.SortFunc(open, func(p, q *openExchange) int { return cmp.Compare(p.seq, q.seq) })
	out := make([]*Exchange, len(open))
	for i, o := range open {
		out[i] = o.Exchange
	}
	return out
}

func orStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
