// Command go-scheduler is a small endpoint picker on the data layer: it keeps a local view
// of the endpoints from one Watch stream and, at every tick, picks one the way the upstream
// EPP's scorers do (queue, KV cache, one custom metric), skipping stale endpoints, and
// prints the pick and why. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	datalayerv1 "github.com/llm-d-datalayer/datalayer/gen/go/datalayer/v1"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg := DefaultConfig()
	target := flag.String("target", "localhost:9002", "the data layer's gRPC address; several replicas of one group: a:9002,b:9002")
	selector := flag.String("selector", "", "label selector of the endpoints to pick from (Kubernetes syntax)")
	picks := flag.Int("picks", 0, "stop after this many picks (0: no limit)")
	duration := flag.Duration("duration", 0, "stop after this long (0: no limit)")
	interval := flag.Duration("interval", time.Second, "time between picks")
	syncTimeout := flag.Duration("sync-timeout", 10*time.Second, "give up when the first snapshot takes longer")
	flag.StringVar(&cfg.MetricKey, "custom-key", "", "metrics.custom key for the metric scorer (empty: scorer off)")
	flag.Float64Var(&cfg.MetricMin, "custom-min", cfg.MetricMin, "metric scorer: lower end of the expected range")
	flag.Float64Var(&cfg.MetricMax, "custom-max", cfg.MetricMax, "metric scorer: upper end of the expected range")
	flag.StringVar(&cfg.MetricMode, "custom-mode", cfg.MetricMode, "metric scorer: minimize or maximize")
	flag.Float64Var(&cfg.QueueWeight, "queue-weight", cfg.QueueWeight, "weight of the queue scorer")
	flag.Float64Var(&cfg.KVWeight, "kv-weight", cfg.KVWeight, "weight of the KV-cache scorer")
	flag.Float64Var(&cfg.MetricWeight, "custom-weight", cfg.MetricWeight, "weight of the metric scorer")
	flag.StringVar(&cfg.Prompt, "prompt", "", "route this prompt by its cached prefix (MatchPrefix; empty: scorer off)")
	flag.StringVar(&cfg.Model, "model", "", "the prompt's model (base or LoRA name)")
	flag.Float64Var(&cfg.PrefixWeight, "prefix-weight", cfg.PrefixWeight, "weight of the precise prefix-cache scorer")
	flag.Parse()
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "go-scheduler:", err)
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		cancel()
	}()
	if *duration > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, *duration)
		defer stop()
	}

	// grpc-go 1.33 (Debian bookworm) has no credentials/insecure package: WithInsecure it is.
	dialTarget, options := replicas(*target)
	conn, err := grpc.Dial(dialTarget, append(options, grpc.WithInsecure())...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-scheduler: dial:", err)
		return 1
	}
	defer conn.Close()

	attributes := []string{"metrics"} // identity, labels, stale and last_error always come
	client := datalayerv1.NewDataLayerClient(conn)
	mirror := NewMirror(client, *selector, attributes, os.Stderr)
	tokens := StandInTokens(cfg.Prompt)
	go mirror.Run(ctx)

	select {
	case <-mirror.Synced():
	case <-time.After(*syncTimeout):
		fmt.Fprintf(os.Stderr, "go-scheduler: no snapshot from %s within %s\n", *target, *syncTimeout)
		return 1
	case <-ctx.Done():
		return 0
	}
	endpoints, revision, instance := mirror.Snapshot()
	fmt.Printf("synced: %d endpoints at revision %d (instance %s), selector %q\n",
		len(endpoints), revision, instance, *selector)

	ticker := time.NewTicker(*interval)
	defer ticker.Stop()
	for n := 1; *picks == 0 || n <= *picks; n++ {
		endpoints, _, _ := mirror.Snapshot()
		var prefix *PrefixAnswer
		if cfg.Prompt != "" {
			answer, err := MatchPrefix(ctx, client, cfg.Model, tokens, *selector)
			if err != nil { // no index, or unreachable: this pick goes on without the scorer
				fmt.Println("MatchPrefix:", err)
			} else {
				prefix = &answer
			}
		}
		fmt.Println(strings.Join(Format(n, PickWithPrefix(endpoints, cfg, prefix), cfg), "\n"))
		if *picks != 0 && n == *picks {
			break
		}
		select {
		case <-ctx.Done():
			return 0
		case <-ticker.C:
		}
	}
	return 0
}

// replicas turns "a:9002,b:9002" into one connection over every replica of a group: every
// replica serves every endpoint, and pick_first moves to the next address when the current
// one fails, so the mirror's next Watch lands on a live replica (its resume there names
// another instance, so it gets a full snapshot). One address is dialled as it is.
func replicas(target string) (string, []grpc.DialOption) {
	parts := strings.Split(target, ",")
	if len(parts) < 2 {
		return target, nil
	}
	builder := manual.NewBuilderWithScheme("datalayer-replicas")
	state := resolver.State{}
	for _, part := range parts {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: strings.TrimSpace(part)})
	}
	builder.InitialState(state)
	return builder.Scheme() + ":///group", []grpc.DialOption{grpc.WithResolvers(builder)}
}
