package grafana

import (
	"fmt"
	"strings"
)

// panelSpec is one panel as the specs write it.
type panelSpec struct {
	title, desc, kind, unit string // kind: stat | timeseries
	width                   int    // grid columns of 24 (default: stat 6, timeseries 12)
	targets                 []targetSpec
}

type targetSpec struct{ expr, legend string }

// dashSpec is one dashboard as the specs write it.
type dashSpec struct {
	uid, title, desc string
	vars             []Variable
	panels           []panelSpec
}

var promDS = Datasource{Type: "prometheus", UID: DatasourceVar}

func datasourceVar() Variable {
	return Variable{Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus", Refresh: 1, Options: []any{}}
}

// queryVar is a label_values variable; all adds "All" (every value, as .*).
func queryVar(name, label, query string, all bool) Variable {
	v := Variable{Name: name, Label: label, Type: "query", Query: query, Definition: query, Datasource: &promDS,
		Refresh: 2, Sort: 1, Options: []any{}, Multi: all, IncludeAll: all}
	if all {
		v.AllValue = ".*"
	}
	return v
}

// build lays the panels out left to right, top to bottom, with ids from 1.
func build(s dashSpec) Dashboard {
	d := Dashboard{
		UID: s.uid, Title: s.title, Description: s.desc, Tags: []string{"trellis"}, Timezone: "browser",
		Editable: true, SchemaVersion: SchemaVersion, Version: 1, Refresh: "30s",
		Time:        TimeRange{From: "now-1h", To: "now"},
		Templating:  Templating{List: append([]Variable{datasourceVar()}, s.vars...)},
		Annotations: Annotations{List: []any{}},
		Links:       []Link{{Title: "Trellis dashboards", Type: "dashboards", Tags: []string{"trellis"}, AsDropdown: true, IncludeVars: true, KeepTime: true}},
	}
	x, y, rowH := 0, 0, 0
	for i, p := range s.panels {
		w, h := p.width, 8
		if w == 0 {
			w = map[bool]int{true: 6, false: 12}[p.kind == "stat"]
		}
		if p.kind == "stat" {
			h = 4
		}
		if x+w > 24 {
			x, y, rowH = 0, y+rowH, 0
		}
		d.Panels = append(d.Panels, panel(i+1, p, GridPos{H: h, W: w, X: x, Y: y}))
		x, rowH = x+w, max(rowH, h)
	}
	return d
}

func panel(id int, p panelSpec, pos GridPos) Panel {
	out := Panel{ID: id, Type: p.kind, Title: p.title, Description: p.desc, GridPos: pos, Datasource: promDS,
		FieldConfig: FieldConfig{Defaults: FieldDefaults{Unit: p.unit}, Overrides: []any{}}, Options: map[string]any{}}
	if p.unit == "percentunit" {
		zero, one := 0.0, 1.0
		out.FieldConfig.Defaults.Min, out.FieldConfig.Defaults.Max = &zero, &one
	}
	if p.kind == "stat" {
		out.Options = map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"colorMode": "value", "graphMode": "area", "textMode": "auto"}
	} else {
		out.Options = map[string]any{"legend": map[string]any{"displayMode": "table", "placement": "bottom", "showLegend": true,
			"calcs": []string{"mean", "lastNotNull"}}, "tooltip": map[string]any{"mode": "multi", "sort": "desc"}}
	}
	for i, t := range p.targets {
		out.Targets = append(out.Targets, Target{RefID: string(rune('A' + i)), Datasource: promDS, Expr: t.expr,
			LegendFormat: t.legend, Range: true})
	}
	return out
}

// sel renders a label selector from name=value pairs; a value starting
// with "~" is a regex match.
func sel(pairs ...string) string {
	var parts []string
	for i := 0; i+1 < len(pairs); i += 2 {
		op, v := "=", pairs[i+1]
		switch {
		case strings.HasPrefix(v, "~"):
			op, v = "=~", v[1:]
		case strings.HasPrefix(v, "!~"):
			op, v = "!~", v[2:]
		case strings.HasPrefix(v, "!"):
			op, v = "!=", v[1:]
		}
		parts = append(parts, fmt.Sprintf("%s%s%q", pairs[i], op, v))
	}
	return "{" + strings.Join(parts, ",") + "}"
}
