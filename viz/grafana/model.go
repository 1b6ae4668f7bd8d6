// Package grafana holds Trellis's Grafana dashboards (the mesh, a
// workload, a route, the control plane): generated from the specs in
// dashboards.go into dashboards/*.json (Grafana's dashboard JSON model,
// committed and embedded), and the PromQL of every panel, so the viz suite
// can run each one against a real Prometheus (Check).
package grafana

import (
	"encoding/json"
	"fmt"
)

// SchemaVersion is the dashboard JSON model version of Grafana 12.
const SchemaVersion = 41

// The labels the viz Prometheus configuration (`trellis viz install`)
// relabels onto every scraped series, from the pod's metadata.
const (
	LabelNamespace    = "namespace"
	LabelPod          = "pod"
	LabelWorkloadKind = "workload_kind"
	LabelWorkload     = "workload"
)

// DatasourceVar is the templated datasource every panel and target uses.
const DatasourceVar = "${datasource}"

// Model types: the subset of Grafana's dashboard JSON model used here.
type (
	Dashboard struct {
		UID           string      `json:"uid"`
		Title         string      `json:"title"`
		Description   string      `json:"description"`
		Tags          []string    `json:"tags"`
		Timezone      string      `json:"timezone"`
		Editable      bool        `json:"editable"`
		SchemaVersion int         `json:"schemaVersion"`
		Version       int         `json:"version"`
		Refresh       string      `json:"refresh"`
		Time          TimeRange   `json:"time"`
		Templating    Templating  `json:"templating"`
		Annotations   Annotations `json:"annotations"`
		Links         []Link      `json:"links"`
		Panels        []Panel     `json:"panels"`
	}
	TimeRange  struct{ From, To string }
	Templating struct {
		List []Variable `json:"list"`
	}
	Annotations struct {
		List []any `json:"list"`
	}
	Link struct {
		Title       string   `json:"title"`
		Type        string   `json:"type"`
		Tags        []string `json:"tags"`
		AsDropdown  bool     `json:"asDropdown"`
		IncludeVars bool     `json:"includeVars"`
		KeepTime    bool     `json:"keepTime"`
	}
	Variable struct {
		Name       string      `json:"name"`
		Label      string      `json:"label"`
		Type       string      `json:"type"` // datasource | query
		Query      string      `json:"query"`
		Definition string      `json:"definition,omitempty"`
		Datasource *Datasource `json:"datasource,omitempty"`
		Refresh    int         `json:"refresh"`
		Multi      bool        `json:"multi"`
		IncludeAll bool        `json:"includeAll"`
		AllValue   string      `json:"allValue,omitempty"`
		Sort       int         `json:"sort"`
		Current    struct{}    `json:"current"`
		Options    []any       `json:"options"`
		Hide       int         `json:"hide"`
	}
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	Panel struct {
		ID          int            `json:"id"`
		Type        string         `json:"type"` // stat | timeseries | table
		Title       string         `json:"title"`
		Description string         `json:"description,omitempty"`
		GridPos     GridPos        `json:"gridPos"`
		Datasource  Datasource     `json:"datasource"`
		Targets     []Target       `json:"targets"`
		FieldConfig FieldConfig    `json:"fieldConfig"`
		Options     map[string]any `json:"options"`
	}
	GridPos     struct{ H, W, X, Y int }
	FieldConfig struct {
		Defaults  FieldDefaults `json:"defaults"`
		Overrides []any         `json:"overrides"`
	}
	FieldDefaults struct {
		Unit     string   `json:"unit,omitempty"`
		Min      *float64 `json:"min,omitempty"`
		Max      *float64 `json:"max,omitempty"`
		Decimals *int     `json:"decimals,omitempty"`
	}
	Target struct {
		RefID        string     `json:"refId"`
		Datasource   Datasource `json:"datasource"`
		Expr         string     `json:"expr"`
		LegendFormat string     `json:"legendFormat"`
		Instant      bool       `json:"instant,omitempty"`
		Range        bool       `json:"range"`
	}
)

// MarshalJSON writes the lower-case keys Grafana expects.
func (t TimeRange) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"from": t.From, "to": t.To})
}

// MarshalJSON writes the lower-case keys Grafana expects.
func (g GridPos) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]int{"h": g.H, "w": g.W, "x": g.X, "y": g.Y})
}

// Render is the committed form of a dashboard: indented JSON.
func Render(d Dashboard) ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", d.UID, err)
	}
	return append(b, '\n'), nil
}
