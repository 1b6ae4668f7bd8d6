package tapcmd

import (
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// writeEvent prints one event in format: text and wide one line, json one
// protojson object a line, yaml one document each.
func writeEvent(w io.Writer, format string, ev *apiv1.TapEvent) error {
	switch format {
	case "json", "yaml":
		b, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		if format == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "---\n%s", b)
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintln(w, eventLine(ev, format == "wide"))
	return err
}

// eventLine: `req`, `rsp` and `end` lines as Linkerd users know them,
// with the pod and (wide) both identities and the route.
func eventLine(ev *apiv1.TapEvent, wide bool) string {
	var b strings.Builder
	tls := "false"
	if ev.GetTls() {
		tls = "true"
	}
	head := func(kind string) {
		fmt.Fprintf(&b, "%s id=%s/%d %s src=%s dst=%s tls=%s", kind, ev.GetPod(), ev.GetId(), dir(ev.GetDirection()), ev.GetSource(), ev.GetDestination(), tls)
	}
	switch e := ev.GetEvent().(type) {
	case *apiv1.TapEvent_RequestInit_:
		r := e.RequestInit
		head("req")
		fmt.Fprintf(&b, " :method=%s :authority=%s :path=%s", r.GetMethod(), r.GetAuthority(), r.GetPath())
		if len(r.GetHeaderNames()) > 0 {
			fmt.Fprintf(&b, " headers=%s", strings.Join(r.GetHeaderNames(), ","))
		}
	case *apiv1.TapEvent_ResponseInit_:
		r := e.ResponseInit
		head("rsp")
		fmt.Fprintf(&b, " :status=%d latency=%s", r.GetHttpStatus(), ms(r.GetSinceRequestInit().AsDuration()))
		if len(r.GetHeaderNames()) > 0 {
			fmt.Fprintf(&b, " headers=%s", strings.Join(r.GetHeaderNames(), ","))
		}
	case *apiv1.TapEvent_ResponseEnd_:
		r := e.ResponseEnd
		head("end")
		if r.GetGrpcStatus() >= 0 {
			fmt.Fprintf(&b, " grpc-status=%d", r.GetGrpcStatus())
		}
		fmt.Fprintf(&b, " duration=%s request-bytes=%d response-bytes=%d", ms(r.GetSinceRequestInit().AsDuration()), r.GetRequestBytes(), r.GetResponseBytes())
		if r.GetError() != "" {
			fmt.Fprintf(&b, " error=%q", r.GetError())
		}
		if n := len(r.GetRequestBody()) + len(r.GetResponseBody()); n > 0 {
			fmt.Fprintf(&b, " captured=%dB", n)
		}
	default:
		head("unknown")
	}
	if wide {
		fmt.Fprintf(&b, " ns=%s src-id=%s dst-id=%s", ev.GetNamespace(), orDash(ev.GetSourceIdentity()), orDash(ev.GetDestinationIdentity()))
		if ev.GetRoute() != "" {
			fmt.Fprintf(&b, " route=%s", ev.GetRoute())
		}
	}
	return b.String()
}

func dir(d string) string {
	switch d {
	case "inbound":
		return "in"
	case "outbound":
		return "out"
	}
	return orDash(d)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d.Microseconds())/1000)
}
