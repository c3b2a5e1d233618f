package main

// A local view of the data layer's endpoints, kept current from one Watch stream: the
// initial ADDED events and the SYNCED marker, then UPDATED / REMOVED as they happen. When
// the stream breaks it reconnects with backoff and resumes from the last revision; the
// server replays the gap or sends a full snapshot (flagged), and the mirror applies either.

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	datalayerv1 "github.com/llm-d-datalayer/datalayer/gen/go/datalayer/v1"
)

// Mirror holds the endpoints of one subscription.
type Mirror struct {
	client     datalayerv1.DataLayerClient
	selector   string
	attributes []string
	logf       func(format string, args ...interface{})

	mu         sync.Mutex
	endpoints  map[string]*datalayerv1.Endpoint
	revision   uint64
	instanceID string
	synced     bool
	syncedOnce sync.Once
	syncedCh   chan struct{}
}

// NewMirror makes a mirror; Run starts streaming.
func NewMirror(client datalayerv1.DataLayerClient, selector string, attributes []string, log io.Writer) *Mirror {
	return &Mirror{
		client:     client,
		selector:   selector,
		attributes: attributes,
		logf:       func(format string, args ...interface{}) { fmt.Fprintf(log, format+"\n", args...) },
		endpoints:  map[string]*datalayerv1.Endpoint{},
		syncedCh:   make(chan struct{}),
	}
}

// Synced is closed once the first stream has delivered the initial state.
func (m *Mirror) Synced() <-chan struct{} { return m.syncedCh }

// Snapshot returns copies of the endpoints, sorted by name, and the revision they reflect.
func (m *Mirror) Snapshot() ([]*datalayerv1.Endpoint, uint64, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*datalayerv1.Endpoint, 0, len(m.endpoints))
	for _, ep := range m.endpoints {
		out = append(out, proto.Clone(ep).(*datalayerv1.Endpoint))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, m.revision, m.instanceID
}

// Run streams until ctx is done, reconnecting with jittered exponential backoff.
func (m *Mirror) Run(ctx context.Context) {
	const initial, ceiling = 100 * time.Millisecond, 5 * time.Second
	delay := initial
	for ctx.Err() == nil {
		m.mu.Lock()
		sub := &datalayerv1.Subscription{
			Selector:         m.selector,
			Attributes:       m.attributes,
			ResumeRevision:   m.revision,
			ResumeInstanceId: m.instanceID,
		}
		m.mu.Unlock()
		err := m.stream(ctx, sub, func() { delay = initial })
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		m.synced = false
		m.mu.Unlock()
		m.logf("watch stream ended (%v); reconnecting", err)
		wait := delay/2 + time.Duration(rand.Int63n(int64(delay/2)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if delay *= 2; delay > ceiling {
			delay = ceiling
		}
	}
}

func (m *Mirror) stream(ctx context.Context, sub *datalayerv1.Subscription, onResponse func()) error {
	stream, err := m.client.Watch(ctx, sub)
	if err != nil {
		return err
	}
	first := true
	for {
		response, err := stream.Recv()
		if err != nil {
			return err
		}
		m.apply(response, first)
		first = false
		onResponse()
	}
}

func (m *Mirror) apply(response *datalayerv1.WatchResponse, firstOfStream bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if firstOfStream && response.GetFullSnapshot() {
		m.endpoints = map[string]*datalayerv1.Endpoint{}
	}
	for _, event := range response.GetEvents() {
		name := event.GetEndpoint().GetName()
		if event.GetType() == datalayerv1.WatchEvent_REMOVED {
			delete(m.endpoints, name)
		} else {
			m.endpoints[name] = event.GetEndpoint()
		}
	}
	m.revision = response.GetRevision()
	m.instanceID = response.GetInstanceId()
	if response.GetSynced() {
		m.synced = true
		m.syncedOnce.Do(func() { close(m.syncedCh) })
	}
}
