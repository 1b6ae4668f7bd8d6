package dashboard

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/trellis-mesh/trellis/viz/model"
)

// The edges graph is laid out on the server and drawn as inline SVG: one
// column per depth (callers left of what they call), one row per node of
// that column. No script and no layout library.
const (
	nodeW, nodeH = 180, 40
	colGap       = 120
	rowGap       = 40
	margin       = 20
)

type graph struct {
	Width, Height int
	Nodes         []node
	Links         []link
}

type node struct {
	X, Y, W, H int
	// TX, TY: the label's anchor.
	TX, TY int
	Label  string
}

type link struct {
	// Path is the SVG path (numbers only).
	Path string
	MTLS bool
	// Serves: a service to a workload behind it (not traffic measured).
	Serves bool
	// LX, LY: the label's anchor.
	LX, LY int
	Label  string
	Title  string
}

// layout places every resource of edges, and the workloads behind the
// services edges end at (backends): depth is the longest chain of callers
// before a node (bounded, so a cycle ends), rows sorted by name.
func layout(edges []model.Edge, backends map[model.Resource][]model.Resource) graph {
	names := map[string]bool{}
	for _, e := range edges {
		names[resourceString(e.Src)] = true
		names[resourceString(e.Dst)] = true
	}
	// A service's link to each workload behind it, drawn apart.
	var serves []model.Edge
	for _, e := range edges {
		if e.Dst.Kind != "services" {
			continue
		}
		for _, b := range backends[e.Dst] {
			se := model.Edge{Src: e.Dst, Dst: b}
			if names[resourceString(b)] && !slices.ContainsFunc(serves, func(x model.Edge) bool { return x.Src == se.Src && x.Dst == se.Dst }) {
				serves = append(serves, se)
			}
		}
	}
	all := append(slices.Clip(edges), serves...)
	depth := map[string]int{}
	for range len(names) {
		changed := false
		for _, e := range all {
			s, d := resourceString(e.Src), resourceString(e.Dst)
			if s != d && depth[d] < depth[s]+1 && depth[s]+1 < len(names) {
				depth[d] = depth[s] + 1
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	cols := map[int][]string{}
	maxCol, maxRow := 0, 0
	for n := range names {
		cols[depth[n]] = append(cols[depth[n]], n)
		maxCol = max(maxCol, depth[n])
	}
	pos := map[string]node{}
	var g graph
	for c := 0; c <= maxCol; c++ {
		slices.Sort(cols[c])
		maxRow = max(maxRow, len(cols[c]))
		for r, n := range cols[c] {
			x, y := margin+c*(nodeW+colGap), margin+r*(nodeH+rowGap)
			nd := node{X: x, Y: y, W: nodeW, H: nodeH, TX: x + nodeW/2, TY: y + nodeH/2 + 5, Label: n}
			pos[n] = nd
			g.Nodes = append(g.Nodes, nd)
		}
	}
	for _, e := range edges {
		s, d := pos[resourceString(e.Src)], pos[resourceString(e.Dst)]
		if s == d {
			continue // a workload calling itself: in the table only
		}
		g.Links = append(g.Links, edgeLink(e, s, d))
	}
	for _, e := range serves {
		l := edgeLink(e, pos[resourceString(e.Src)], pos[resourceString(e.Dst)])
		l.Serves, l.Label, l.Title = true, "", resourceString(e.Src)+" is served by "+resourceString(e.Dst)
		g.Links = append(g.Links, l)
	}
	g.Width = 2*margin + (maxCol+1)*nodeW + maxCol*colGap
	g.Height = 2*margin + maxRow*nodeH + max(0, maxRow-1)*rowGap
	return g
}

func edgeLink(e model.Edge, s, d node) link {
	x1, y1 := s.X+s.W, s.Y+s.H/2
	x2, y2 := d.X, d.Y+d.H/2
	bend := max(40, (x2-x1)/2)
	if x2 <= x1 { // a call back to an earlier column: loop below
		bend = colGap
	}
	l := link{
		Path:  fmt.Sprintf("M %d %d C %d %d, %d %d, %d %d", x1, y1, x1+bend, y1, x2-bend, y2, x2, y2),
		MTLS:  e.MTLS,
		LX:    (x1 + x2) / 2,
		LY:    (y1+y2)/2 - 6,
		Label: strconv.FormatFloat(e.RPS, 'f', 1, 64) + " rps " + fmtPct(e.SuccessRate),
	}
	l.Title = resourceString(e.Src) + " -> " + resourceString(e.Dst)
	if e.MTLS {
		l.Title += " (mTLS: " + e.DstIdentity + ")"
	} else {
		l.Title += " (not mTLS)"
	}
	return l
}
