package main

// The scoring and picking of the example, on the data layer's Endpoint messages. It follows
// the upstream EPP scorers (gateway-api-inference-extension): every scorer gives each
// candidate a score in 0..1, higher is better; the total is the weighted sum; the picker
// takes the highest total. Unlike upstream's max-score picker, which breaks ties at random,
// ties go to the first name in sort order, so the output of the example is reproducible.
//
// Unknown is never zero: the typed metrics are proto3 `optional`, so a field the data layer
// has not read (within its staleness threshold) is a nil pointer, and the generated getter
// would read it as 0, the most attractive value there is. Every scorer here checks presence
// and gives an absent field its worst case (an absent queue scores 0 like the longest one, an
// absent KV-cache use counts as a full cache), so a pod that was not read never wins.

import (
	"fmt"
	"math"
	"sort"
	"strings"

	datalayerv1 "github.com/llm-d-datalayer/datalayer/gen/go/datalayer/v1"
)

// Metric scorer optimisation modes (upstream's `optimizationMode`).
const (
	Minimize = "minimize"
	Maximize = "maximize"
)

// Config holds the scorer weights and the metric scorer's parameters.
type Config struct {
	QueueWeight  float64
	KVWeight     float64
	MetricWeight float64
	// MetricKey is the key of `metrics.custom` the metric scorer reads; empty disables it.
	MetricKey string
	// MetricMin and MetricMax bound the linear normalisation; values outside are clamped.
	MetricMin float64
	MetricMax float64
	// MetricMode is Minimize (lower values are better) or Maximize.
	MetricMode string
	// Prompt turns on the precise prefix-cache scorer (prefix.go) for this prompt and Model.
	Prompt       string
	Model        string
	PrefixWeight float64
}

// DefaultConfig weighs the three scorers equally; the metric scorer is off until a key is set.
func DefaultConfig() Config {
	return Config{QueueWeight: 1, KVWeight: 1, MetricWeight: 1, MetricMin: 0, MetricMax: 1, MetricMode: Minimize, PrefixWeight: 1}
}

// Validate reports a configuration the metric scorer cannot normalise with.
func (c Config) Validate() error {
	if c.MetricMode != Minimize && c.MetricMode != Maximize {
		return fmt.Errorf("metric mode %q: want %q or %q", c.MetricMode, Minimize, Maximize)
	}
	if c.MetricKey != "" && !(c.MetricMax > c.MetricMin) {
		return fmt.Errorf("metric range: max (%g) must be greater than min (%g)", c.MetricMax, c.MetricMin)
	}
	return nil
}

// Waiting is the waiting queue and whether it is known (false: absent on the wire).
func Waiting(ep *datalayerv1.Endpoint) (int64, bool) {
	m := ep.GetMetrics()
	if m == nil || m.WaitingQueueSize == nil {
		return 0, false
	}
	return *m.WaitingQueueSize, true
}

// KVUsage is the KV-cache use (0..1) and whether it is known (false: absent on the wire).
func KVUsage(ep *datalayerv1.Endpoint) (float64, bool) {
	m := ep.GetMetrics()
	if m == nil || m.KvCacheUsagePercent == nil {
		return 0, false
	}
	return *m.KvCacheUsagePercent, true
}

// QueueScores is upstream's queue-scorer: the waiting queue, min-max normalised over the
// candidates, so the shortest queue scores 1 and the longest 0; all equal scores 1 each.
// An absent queue scores 0, the worst case, and takes no part in the min-max range.
func QueueScores(endpoints []*datalayerv1.Endpoint) []float64 {
	scores := make([]float64, len(endpoints))
	lo, hi, known := int64(math.MaxInt64), int64(math.MinInt64), false
	for _, ep := range endpoints {
		q, ok := Waiting(ep)
		if !ok {
			continue
		}
		known = true
		if q < lo {
			lo = q
		}
		if q > hi {
			hi = q
		}
	}
	if !known {
		return scores
	}
	for i, ep := range endpoints {
		q, ok := Waiting(ep)
		switch {
		case !ok:
			scores[i] = 0
		case hi == lo:
			scores[i] = 1
		default:
			scores[i] = float64(hi-q) / float64(hi-lo)
		}
	}
	return scores
}

// KVCacheScores is upstream's kv-cache-utilization-scorer: 1 - KV-cache use (a 0..1
// fraction); an absent use counts as a full cache (score 0), the worst case.
func KVCacheScores(endpoints []*datalayerv1.Endpoint) []float64 {
	scores := make([]float64, len(endpoints))
	for i, ep := range endpoints {
		if usage, ok := KVUsage(ep); ok {
			scores[i] = 1 - usage
		}
	}
	return scores
}

// MetricValue is the value the metric scorer uses for one endpoint: `metrics.custom[key]`,
// or the worst case of the configured range when the key is missing (max when minimising,
// min when maximising). The bool is false when the worst case was used.
func MetricValue(ep *datalayerv1.Endpoint, cfg Config) (float64, bool) {
	if v, ok := ep.GetMetrics().GetCustom()[cfg.MetricKey]; ok {
		return v, true
	}
	if cfg.MetricMode == Maximize {
		return cfg.MetricMin, false
	}
	return cfg.MetricMax, false
}

// MetricScores is upstream's metric-scorer with linear normalisation: the value is clamped
// to [min, max] and mapped to 0..1, inverted when minimising.
func MetricScores(endpoints []*datalayerv1.Endpoint, cfg Config) []float64 {
	scores := make([]float64, len(endpoints))
	span := cfg.MetricMax - cfg.MetricMin
	for i, ep := range endpoints {
		if span <= 0 {
			continue // nothing to normalise against: every candidate scores 0
		}
		v, _ := MetricValue(ep, cfg)
		v = math.Min(math.Max(v, cfg.MetricMin), cfg.MetricMax)
		score := (v - cfg.MetricMin) / span
		if cfg.MetricMode != Maximize {
			score = 1 - score
		}
		scores[i] = score
	}
	return scores
}

// FilterStale drops the endpoints whose data is stale, unless every one is stale, in which
// case all are kept (and allStale is true): an old view beats no pick at all.
func FilterStale(endpoints []*datalayerv1.Endpoint) (kept []*datalayerv1.Endpoint, dropped []string, allStale bool) {
	for _, ep := range endpoints {
		if ep.GetStale() {
			dropped = append(dropped, ep.GetName())
		} else {
			kept = append(kept, ep)
		}
	}
	if len(kept) == 0 && len(endpoints) > 0 {
		return endpoints, nil, true
	}
	return kept, dropped, false
}

// Scored is one candidate's scores and the values behind them.
type Scored struct {
	Name          string
	Total         float64
	Queue         float64
	KV            float64
	Metric        float64
	Waiting       int64
	WaitingKnown  bool
	KVUsage       float64
	KVUsageKnown  bool
	MetricValue   float64
	MetricPresent bool
	Prefix        float64
	Stale         bool
}

// Decision is the outcome of one pick: the chosen name ("" when there was no endpoint),
// the candidates best first, and why some were left out.
type Decision struct {
	Pick       string
	Ranked     []Scored
	SkipStale  []string
	AllStale   bool
	Considered int
}

// Pick scores the non-stale endpoints (all of them when all are stale) and takes the best.
func Pick(endpoints []*datalayerv1.Endpoint, cfg Config) Decision {
	return PickWithPrefix(endpoints, cfg, nil)
}

// PickWithPrefix is Pick with the precise prefix-cache scorer fed by one MatchPrefix answer
// (nil: the scorer is off for this pick).
func PickWithPrefix(endpoints []*datalayerv1.Endpoint, cfg Config, prefix *PrefixAnswer) Decision {
	sorted := append([]*datalayerv1.Endpoint(nil), endpoints...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetName() < sorted[j].GetName() })
	candidates, dropped, allStale := FilterStale(sorted)
	queue := QueueScores(candidates)
	kv := KVCacheScores(candidates)
	var metric []float64
	if cfg.MetricKey != "" {
		metric = MetricScores(candidates, cfg)
	}
	var cached []float64
	if prefix != nil {
		cached = PrefixScores(candidates, *prefix)
	}
	ranked := make([]Scored, len(candidates))
	for i, ep := range candidates {
		s := Scored{Name: ep.GetName(), Queue: queue[i], KV: kv[i], Stale: ep.GetStale()}
		s.Waiting, s.WaitingKnown = Waiting(ep)
		s.KVUsage, s.KVUsageKnown = KVUsage(ep)
		s.Total = cfg.QueueWeight*s.Queue + cfg.KVWeight*s.KV
		if metric != nil {
			s.Metric = metric[i]
			s.MetricValue, s.MetricPresent = MetricValue(ep, cfg)
			s.Total += cfg.MetricWeight * s.Metric
		}
		if cached != nil {
			s.Prefix = cached[i]
			s.Total += cfg.PrefixWeight * s.Prefix
		}
		ranked[i] = s
	}
	// Stable: equal totals keep name order, so the first name wins a tie.
	sort.SliceStable(ranked, func(i, j int) bool { return ranked[i].Total > ranked[j].Total })
	d := Decision{Ranked: ranked, SkipStale: dropped, AllStale: allStale, Considered: len(candidates)}
	if len(ranked) > 0 {
		d.Pick = ranked[0].Name
	}
	return d
}

// Format renders a decision as the lines the example prints: the pick with a one-line
// reason, then one line per candidate with each scorer's score and the value behind it.
func Format(n int, d Decision, cfg Config) []string {
	if d.Pick == "" {
		return []string{fmt.Sprintf("pick %d: none (no endpoints)", n)}
	}
	var why []string
	why = append(why, fmt.Sprintf("best of %d", d.Considered))
	if len(d.SkipStale) > 0 {
		why = append(why, "stale, skipped: "+strings.Join(d.SkipStale, ","))
	}
	if d.AllStale {
		why = append(why, "all stale, scored anyway")
	}
	lines := []string{fmt.Sprintf("pick %d: %s score=%.3f (%s)", n, d.Pick, d.Ranked[0].Total, strings.Join(why, "; "))}
	for _, s := range d.Ranked {
		waiting, usage := "waiting absent, worst case", "usage absent, worst case"
		if s.WaitingKnown {
			waiting = fmt.Sprintf("waiting=%d", s.Waiting)
		}
		if s.KVUsageKnown {
			usage = fmt.Sprintf("usage=%.3f", s.KVUsage)
		}
		line := fmt.Sprintf("  %s score=%.3f queue=%.3f (%s) kv=%.3f (%s)",
			s.Name, s.Total, s.Queue, waiting, s.KV, usage)
		if cfg.MetricKey != "" {
			if s.MetricPresent {
				line += fmt.Sprintf(" metric=%.3f (%s=%g)", s.Metric, cfg.MetricKey, s.MetricValue)
			} else {
				line += fmt.Sprintf(" metric=%.3f (%s missing, worst case %g)", s.Metric, cfg.MetricKey, s.MetricValue)
			}
		}
		if cfg.Prompt != "" {
			line += fmt.Sprintf(" prefix=%.3f", s.Prefix)
		}
		if s.Stale {
			line += " stale"
		}
		lines = append(lines, line)
	}
	return lines
}
