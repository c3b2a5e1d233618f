package main

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	datalayerv1 "github.com/llm-d-datalayer/datalayer/gen/go/datalayer/v1"
)

// endpoint is an endpoint as the data layer sends it, with both load fields present.
func endpoint(name string, waiting int64, kv float64, stale bool, custom map[string]float64) *datalayerv1.Endpoint {
	return &datalayerv1.Endpoint{
		Name:  name,
		Stale: stale,
		Metrics: &datalayerv1.Metrics{
			WaitingQueueSize:    proto.Int64(waiting),
			KvCacheUsagePercent: proto.Float64(kv),
			Custom:              custom,
		},
	}
}

// unread is an endpoint whose queue and KV-cache use were not read: both fields absent.
func unread(name string) *datalayerv1.Endpoint {
	return &datalayerv1.Endpoint{Name: name, Metrics: &datalayerv1.Metrics{}}
}

func TestAbsentFieldsScoreAsTheWorstCase(t *testing.T) {
	eps := []*datalayerv1.Endpoint{unread("a"), endpoint("b", 2, 0.25, false, nil), endpoint("c", 6, 0, false, nil)}
	assertScores(t, "queue", QueueScores(eps), []float64{0, 1, 0})
	assertScores(t, "kv", KVCacheScores(eps), []float64{0, 0.75, 1})
	assertScores(t, "queue, none known", QueueScores([]*datalayerv1.Endpoint{unread("a"), unread("b")}), []float64{0, 0})
	// The generated getter reads an absent field as 0: the trap the scorers avoid.
	if unread("a").GetMetrics().GetWaitingQueueSize() != 0 {
		t.Fatal("expected the getter of an absent field to return 0")
	}
}

func TestAnAbsentQueueNeverWinsOverAKnownSmallQueue(t *testing.T) {
	onlyQueue := &datalayerv1.Endpoint{Name: "a-unread", Metrics: &datalayerv1.Metrics{KvCacheUsagePercent: proto.Float64(0)}}
	d := Pick([]*datalayerv1.Endpoint{onlyQueue, endpoint("b-queue-5", 5, 0, false, nil)}, DefaultConfig())
	if d.Pick != "b-queue-5" {
		t.Fatalf("picked %s: an unread queue won over a known queue of 5", d.Pick)
	}
	onlyKV := &datalayerv1.Endpoint{Name: "a-unread", Metrics: &datalayerv1.Metrics{WaitingQueueSize: proto.Int64(0)}}
	d = Pick([]*datalayerv1.Endpoint{onlyKV, endpoint("b-half-full", 0, 0.5, false, nil)}, DefaultConfig())
	if d.Pick != "b-half-full" {
		t.Fatalf("picked %s: an unread KV-cache use won over a half-full cache", d.Pick)
	}
	d = Pick([]*datalayerv1.Endpoint{unread("a-unread"), endpoint("b-busy", 9, 0.9, false, nil)}, DefaultConfig())
	lines := Format(1, d, DefaultConfig())
	want := "  a-unread score=0.000 queue=0.000 (waiting absent, worst case) kv=0.000 (usage absent, worst case)"
	if d.Pick != "b-busy" || len(lines) != 3 || lines[2] != want {
		t.Fatalf("pick %s, lines %q", d.Pick, lines)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func assertScores(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
	for i := range want {
		if !near(got[i], want[i]) {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
}

func TestQueueScoresAreMinMaxNormalised(t *testing.T) {
	eps := []*datalayerv1.Endpoint{
		endpoint("a", 0, 0, false, nil),
		endpoint("b", 5, 0, false, nil),
		endpoint("c", 10, 0, false, nil),
	}
	assertScores(t, "queue", QueueScores(eps), []float64{1, 0.5, 0})
}

func TestQueueScoresAllEqualAreNeutral(t *testing.T) {
	eps := []*datalayerv1.Endpoint{endpoint("a", 3, 0, false, nil), endpoint("b", 3, 0, false, nil)}
	assertScores(t, "queue", QueueScores(eps), []float64{1, 1})
	assertScores(t, "queue of none", QueueScores(nil), []float64{})
}

func TestKVCacheScoresAreOneMinusUsage(t *testing.T) {
	eps := []*datalayerv1.Endpoint{endpoint("a", 0, 0, false, nil), endpoint("b", 0, 0.25, false, nil), endpoint("c", 0, 1, false, nil)}
	assertScores(t, "kv", KVCacheScores(eps), []float64{1, 0.75, 0})
}

func TestMetricScoresMinimiseClampAndWorstCaseWhenMissing(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MetricKey, cfg.MetricMin, cfg.MetricMax = "latency", 0, 10
	eps := []*datalayerv1.Endpoint{
		endpoint("low", 0, 0, false, map[string]float64{"latency": 2}),
		endpoint("high", 0, 0, false, map[string]float64{"latency": 8}),
		endpoint("over", 0, 0, false, map[string]float64{"latency": 50}),
		endpoint("under", 0, 0, false, map[string]float64{"latency": -3}),
		endpoint("missing", 0, 0, false, map[string]float64{"other": 0}),
	}
	assertScores(t, "metric", MetricScores(eps, cfg), []float64{0.8, 0.2, 0, 1, 0})
	if v, ok := MetricValue(eps[4], cfg); ok || v != 10 {
		t.Fatalf("missing key: got (%v, %v), want the worst case (10, false)", v, ok)
	}
}

func TestMetricScoresMaximiseWorstCaseIsMin(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MetricKey, cfg.MetricMin, cfg.MetricMax, cfg.MetricMode = "hits", 0, 4, Maximize
	eps := []*datalayerv1.Endpoint{
		endpoint("a", 0, 0, false, map[string]float64{"hits": 3}),
		endpoint("b", 0, 0, false, nil),
	}
	assertScores(t, "metric", MetricScores(eps, cfg), []float64{0.75, 0})
	if v, ok := MetricValue(eps[1], cfg); ok || v != 0 {
		t.Fatalf("missing key: got (%v, %v), want the worst case (0, false)", v, ok)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cfg.MetricKey, cfg.MetricMin, cfg.MetricMax = "x", 1, 1
	if err := cfg.Validate(); err == nil {
		t.Fatal("max == min should be refused")
	}
	cfg = DefaultConfig()
	cfg.MetricMode = "sideways"
	if err := cfg.Validate(); err == nil {
		t.Fatal("an unknown mode should be refused")
	}
}

func TestFilterStaleDropsStaleUnlessAllAre(t *testing.T) {
	eps := []*datalayerv1.Endpoint{endpoint("a", 0, 0, true, nil), endpoint("b", 0, 0, false, nil)}
	kept, dropped, all := FilterStale(eps)
	if len(kept) != 1 || kept[0].GetName() != "b" || len(dropped) != 1 || dropped[0] != "a" || all {
		t.Fatalf("got kept=%v dropped=%v all=%v", kept, dropped, all)
	}
	eps = []*datalayerv1.Endpoint{endpoint("a", 0, 0, true, nil), endpoint("b", 0, 0, true, nil)}
	kept, dropped, all = FilterStale(eps)
	if len(kept) != 2 || len(dropped) != 0 || !all {
		t.Fatalf("all stale: got kept=%v dropped=%v all=%v", kept, dropped, all)
	}
}

func TestPickPrefersIdleAndNeverStale(t *testing.T) {
	eps := []*datalayerv1.Endpoint{
		endpoint("busy", 8, 0.9, false, nil),
		endpoint("idle", 0, 0.1, false, nil),
		endpoint("gone", 0, 0, true, nil), // would win on its (old) numbers
	}
	d := Pick(eps, DefaultConfig())
	if d.Pick != "idle" {
		t.Fatalf("picked %q, want idle: %+v", d.Pick, d)
	}
	if len(d.Ranked) != 2 || d.Ranked[1].Name != "busy" || !near(d.Ranked[0].Total, 1.9) {
		t.Fatalf("ranking: %+v", d.Ranked)
	}
	if len(d.SkipStale) != 1 || d.SkipStale[0] != "gone" {
		t.Fatalf("stale skipped: %v", d.SkipStale)
	}
}

func TestPickAllStaleStillPicks(t *testing.T) {
	eps := []*datalayerv1.Endpoint{endpoint("a", 4, 0.5, true, nil), endpoint("b", 1, 0.5, true, nil)}
	d := Pick(eps, DefaultConfig())
	if d.Pick != "b" || !d.AllStale {
		t.Fatalf("got %+v", d)
	}
	lines := Format(7, d, DefaultConfig())
	if !strings.HasPrefix(lines[0], "pick 7: b ") || !strings.Contains(lines[0], "all stale, scored anyway") {
		t.Fatalf("lines: %q", lines)
	}
}

func TestPickMetricScorerDecidesWhenLoadIsEqual(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MetricKey, cfg.MetricMax = "ttft", 2
	eps := []*datalayerv1.Endpoint{
		endpoint("a-missing", 0, 0, false, nil),
		endpoint("b-slow", 0, 0, false, map[string]float64{"ttft": 1.5}),
		endpoint("c-fast", 0, 0, false, map[string]float64{"ttft": 0.5}),
	}
	d := Pick(eps, cfg)
	if d.Pick != "c-fast" {
		t.Fatalf("picked %q: %+v", d.Pick, d.Ranked)
	}
	if last := d.Ranked[2]; last.Name != "a-missing" || last.MetricPresent || last.MetricValue != 2 {
		t.Fatalf("missing key should rank last with the worst case: %+v", last)
	}
	lines := Format(1, d, cfg)
	if !strings.Contains(strings.Join(lines, "\n"), "a-missing score=2.000 queue=1.000 (waiting=0) kv=1.000 (usage=0.000) metric=0.000 (ttft missing, worst case 2)") {
		t.Fatalf("lines: %q", lines)
	}
}

func TestPickTiesGoToFirstNameAndWeightsApply(t *testing.T) {
	eps := []*datalayerv1.Endpoint{endpoint("b", 0, 0, false, nil), endpoint("a", 0, 0, false, nil)}
	if d := Pick(eps, DefaultConfig()); d.Pick != "a" {
		t.Fatalf("tie: picked %q, want a", d.Pick)
	}
	// b has the shorter queue, a the emptier cache: the weights decide.
	eps = []*datalayerv1.Endpoint{endpoint("a", 10, 0.0, false, nil), endpoint("b", 0, 0.6, false, nil)}
	cfg := DefaultConfig()
	cfg.QueueWeight, cfg.KVWeight = 1, 3
	if d := Pick(eps, cfg); d.Pick != "a" {
		t.Fatalf("kv-weighted: picked %q, want a: %+v", d.Pick, d.Ranked)
	}
	cfg.QueueWeight, cfg.KVWeight = 3, 1
	if d := Pick(eps, cfg); d.Pick != "b" {
		t.Fatalf("queue-weighted: picked %q, want b: %+v", d.Pick, d.Ranked)
	}
}

func TestPickNoEndpoints(t *testing.T) {
	d := Pick(nil, DefaultConfig())
	if d.Pick != "" {
		t.Fatalf("got %+v", d)
	}
	if lines := Format(3, d, DefaultConfig()); len(lines) != 1 || lines[0] != "pick 3: none (no endpoints)" {
		t.Fatalf("lines: %q", lines)
	}
}

func TestMirrorAppliesEventsSnapshotsAndRemovals(t *testing.T) {
	m := NewMirror(nil, "", nil, &strings.Builder{})
	added := func(names ...string) []*datalayerv1.WatchEvent {
		var events []*datalayerv1.WatchEvent
		for _, name := range names {
			events = append(events, &datalayerv1.WatchEvent{Type: datalayerv1.WatchEvent_ADDED, Endpoint: endpoint(name, 0, 0, false, nil)})
		}
		return events
	}
	m.apply(&datalayerv1.WatchResponse{Events: added("b", "a"), Revision: 3, InstanceId: "i1", FullSnapshot: true}, true)
	select {
	case <-m.Synced():
		t.Fatal("synced before the SYNCED marker")
	default:
	}
	m.apply(&datalayerv1.WatchResponse{Revision: 3, InstanceId: "i1", Synced: true}, false)
	<-m.Synced()
	m.apply(&datalayerv1.WatchResponse{Revision: 5, InstanceId: "i1", Events: []*datalayerv1.WatchEvent{
		{Type: datalayerv1.WatchEvent_UPDATED, Endpoint: endpoint("a", 7, 0, false, nil)},
		{Type: datalayerv1.WatchEvent_REMOVED, Endpoint: &datalayerv1.Endpoint{Name: "b"}},
	}}, false)
	eps, revision, instance := m.Snapshot()
	if len(eps) != 1 || eps[0].GetName() != "a" || eps[0].GetMetrics().GetWaitingQueueSize() != 7 || revision != 5 || instance != "i1" {
		t.Fatalf("after update/remove: %v rev=%d instance=%s", eps, revision, instance)
	}
	// A new stream that answers with a full snapshot replaces what the mirror held.
	m.apply(&datalayerv1.WatchResponse{Events: added("c"), Revision: 1, InstanceId: "i2", FullSnapshot: true, Synced: true}, true)
	eps, revision, instance = m.Snapshot()
	if len(eps) != 1 || eps[0].GetName() != "c" || revision != 1 || instance != "i2" {
		t.Fatalf("after a full snapshot: %v rev=%d instance=%s", eps, revision, instance)
	}
	// Snapshot hands out copies: changing one leaves the mirror as it was.
	eps[0].Name = "changed"
	if again, _, _ := m.Snapshot(); again[0].GetName() != "c" {
		t.Fatal("Snapshot returned the mirror's own message")
	}
}
