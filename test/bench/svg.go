package main

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Series is one line of a plot.
type Series struct {
	// Label is shown in the legend; series with the same label share one
	// legend entry (the repetitions of one backend).
	Label string
	// Color is an SVG color.
	Color string
	// Dash is an SVG stroke-dasharray ("" for a solid line).
	Dash string
	// Points are (seconds, value) pairs in the panel's unit.
	Points []Point
}

// RepDash is the line style of repetition rep (1-based): solid, dashed,
// dotted, dash-dotted, then around again.
func RepDash(rep int) string {
	styles := []string{"", "7,4", "2,3", "7,3,2,3"}
	return styles[(max(rep, 1)-1)%len(styles)]
}

// Panel is one chart: lines over a shared time axis.
type Panel struct {
	Title string
	// YLabel names the unit of the values.
	YLabel string
	// Shade, when > 0, greys the time range [0, Shade) (the warm-up).
	Shade float64
	// XMax is the end of the time axis (0: the largest T).
	XMax   float64
	Series []Series
}

// Layout of the SVG, in pixels.
const (
	svgWidth   = 960
	svgPanelH  = 300
	svgLeft    = 70
	svgRight   = 190
	svgTop     = 40
	svgBottom  = 45
	svgTitleH  = 36
	svgLegendW = 170
)

// BackendColor gives each backend the same color in every plot.
func BackendColor(name string) string {
	switch name {
	case "vhostd":
		return "#d62728"
	case RefDPDK:
		return "#1f77b4"
	case RefOVS:
		return "#2ca02c"
	}
	palette := []string{"#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}
	h := 0
	for _, c := range name {
		h = h*31 + int(c)
	}
	return palette[(h%len(palette)+len(palette))%len(palette)]
}

// NiceStep returns a round axis step (1, 2 or 5 times a power of ten)
// giving about n ticks up to max.
func NiceStep(max float64, n int) float64 {
	if !(max > 0) || n < 1 {
		return 1
	}
	raw := max / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// WriteSVG draws panels stacked vertically under a title, each with its
// axes, grid, warm-up shading, one polyline per series and a legend.
func WriteSVG(w io.Writer, title string, panels []Panel) error {
	bw := bufio.NewWriter(w)
	h := svgTitleH + len(panels)*svgPanelH
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, h, svgWidth, h)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(bw, `<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", svgLeft, esc(title))
	for i, p := range panels {
		writePanel(bw, p, svgTitleH+i*svgPanelH)
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

func writePanel(w io.Writer, p Panel, y0 int) {
	pw := float64(svgWidth - svgLeft - svgRight)
	ph := float64(svgPanelH - svgTop - svgBottom)
	left, top := float64(svgLeft), float64(y0+svgTop)
	xmax, ymax := p.XMax, 0.0
	for _, s := range p.Series {
		for _, pt := range s.Points {
			if p.XMax == 0 {
				xmax = math.Max(xmax, pt.T)
			}
			ymax = math.Max(ymax, pt.V)
		}
	}
	if !(xmax > 0) {
		xmax = 1
	}
	ystep := NiceStep(ymax*1.05, 5)
	ytop := math.Max(ystep, math.Ceil(ymax*1.05/ystep)*ystep)
	X := func(t float64) float64 { return left + math.Min(math.Max(t, 0), xmax)/xmax*pw }
	Y := func(v float64) float64 { return top + ph - math.Max(v, 0)/ytop*ph }

	fmt.Fprintf(w, `<g><text x="%g" y="%g" font-size="13" font-weight="bold">%s</text>`+"\n", left, top-12, esc(p.Title))
	if p.Shade > 0 {
		fmt.Fprintf(w, `<rect x="%g" y="%g" width="%.1f" height="%g" fill="#eeeeee"/>`+"\n", left, top, X(p.Shade)-left, ph)
		fmt.Fprintf(w, `<text x="%.1f" y="%g" fill="#888" font-size="10">warm-up</text>`+"\n", left+4, top+12)
	}
	for v := 0.0; v <= ytop+ystep/2; v += ystep {
		y := Y(v)
		fmt.Fprintf(w, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, left+pw, y)
		fmt.Fprintf(w, `<text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, trimFloat(v))
	}
	xstep := NiceStep(xmax, 10)
	for t := 0.0; t <= xmax+xstep/100; t += xstep {
		x := X(t)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#999"/>`+"\n", x, top+ph, x, top+ph+4)
		fmt.Fprintf(w, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x, top+ph+16, trimFloat(t))
	}
	fmt.Fprintf(w, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="middle">time since the loop was seeded (s)</text>`+"\n", left+pw/2, top+ph+34)
	fmt.Fprintf(w, `<text transform="translate(%g,%g) rotate(-90)" text-anchor="middle">%s</text>`+"\n", left-48, top+ph/2, esc(p.YLabel))

	var legend []Series
	seen := map[string]int{}
	for _, s := range p.Series {
		if len(s.Points) == 0 {
			continue
		}
		var b strings.Builder
		for _, pt := range s.Points {
			fmt.Fprintf(&b, "%.1f,%.1f ", X(pt.T), Y(pt.V))
		}
		dash := ""
		if s.Dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, esc(s.Dash))
		}
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5" stroke-opacity="0.8"%s points="%s"/>`+"\n",
			esc(s.Color), dash, strings.TrimSpace(b.String()))
		if _, ok := seen[s.Label]; !ok {
			legend = append(legend, s)
		}
		seen[s.Label]++
	}
	lx := left + pw + 16
	for i, s := range legend {
		ly := top + 10 + float64(i)*18
		fmt.Fprintf(w, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="3"/>`+"\n", lx, ly, lx+22, ly, esc(s.Color))
		label := s.Label
		if n := seen[s.Label]; n > 1 {
			label += fmt.Sprintf(" (%d runs)", n)
		}
		fmt.Fprintf(w, `<text x="%g" y="%g">%s</text>`+"\n", lx+28, ly+4, esc(clip(label, 24)))
	}
	reps := 0
	for _, n := range seen {
		reps = max(reps, n)
	}
	if reps > 1 {
		ly := top + 10 + float64(len(legend))*18 + 8
		for i := 0; i < min(reps, 4); i++ {
			y := ly + float64(i)*16
			name := fmt.Sprintf("rep %d", i+1)
			if i == 3 && reps > 4 {
				name = "rep 4, 8, ..."
			}
			fmt.Fprintf(w, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#555" stroke-width="1.5" stroke-dasharray="%s"/>`+"\n",
				lx, y, lx+22, y, RepDash(i+1))
			fmt.Fprintf(w, `<text x="%g" y="%g" font-size="11" fill="#555">%s</text>`+"\n", lx+28, y+4, name)
		}
	}
	fmt.Fprintln(w, "</g>")
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func esc(s string) string { return html.EscapeString(s) }

// RatePanels turns results into one panel per case, titled prefix+case:
// each repetition of each backend a line of Mpps over time, warm-up
// shaded.
func RatePanels(results []RepResult, cases []Case, backends []string, prefix string, warmup float64) []Panel {
	var out []Panel
	for _, c := range cases {
		p := Panel{Title: prefix + c.Name(), YLabel: "Mpps received by the generator", Shade: warmup}
		for _, b := range backends {
			for _, r := range results {
				if r.Backend != b || r.Case != c || len(r.Samples) < 2 {
					continue
				}
				pts := Rates(r.Samples)
				for i := range pts {
					pts[i].V /= 1e6
				}
				p.Series = append(p.Series, Series{Label: b, Color: BackendColor(b), Dash: RepDash(r.Rep), Points: pts})
			}
		}
		if len(p.Series) > 0 {
			out = append(out, p)
		}
	}
	return out
}
