// Command go-expfmt times Go's Prometheus text parser (prometheus/common expfmt, the upstream
// picker's parser) on exposition pages, for bench/parse.py's baseline.
//
//	go-expfmt [-repeat N] [-rounds R] PAGE...
//
// It prints one JSON line per page: {"path": ..., "bytes": ..., "families": ..., "us": ...,
// "cpu_us": ...}: "us" is the best of R rounds of N full parses (TextToMetricFamilies), in
// wall-clock µs per parse (as `go test -bench` reports); "cpu_us" is the process's CPU time
// (user + system, all threads: Go's garbage collector runs beside the parse) per parse over
// all rounds.
// Built in GOPATH mode against Debian's golang-github-prometheus-common-dev (bench/parse.py
// builds and runs it).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
)

type result struct {
	Path     string  `json:"path"`
	Bytes    int     `json:"bytes"`
	Families int     `json:"families"`
	Us       float64 `json:"us"`
	CPUUs    float64 `json:"cpu_us"`
}

func cpuTime() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

func parse(page []byte) (int, error) {
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(bytes.NewReader(page))
	return len(families), err
}

func main() {
	repeat := flag.Int("repeat", 200, "parses per round")
	rounds := flag.Int("rounds", 7, "rounds; the best one counts")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	for _, path := range flag.Args() {
		page, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		families, err := parse(page)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		best := time.Duration(1<<63 - 1)
		cpu0 := cpuTime()
		for r := 0; r < *rounds; r++ {
			start := time.Now()
			for i := 0; i < *repeat; i++ {
				if _, err := parse(page); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
			}
			if d := time.Since(start); d < best {
				best = d
			}
		}
		cpu := cpuTime() - cpu0
		us := float64(best.Nanoseconds()) / float64(*repeat) / 1e3
		cpuUs := float64(cpu.Nanoseconds()) / float64(*repeat**rounds) / 1e3
		if err := out.Encode(result{path, len(page), families, us, cpuUs}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
