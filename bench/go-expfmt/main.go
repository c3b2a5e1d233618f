// Command go-expfmt times Go's Prometheus text parser (prometheus/common expfmt, the upstream
// picker's parser) on exposition pages, for bench/parse.py's baseline.
//
//	go-expfmt [-repeat N] [-rounds R] PAGE...
//
// It prints one JSON line per page: {"path": ..., "bytes": ..., "families": ..., "us": ...},
// "us" being the best of R rounds of N full parses (TextToMetricFamilies), in µs per parse.
// Built in GOPATH mode against Debian's golang-github-prometheus-common-dev (bench/parse.py
// builds and runs it).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/common/expfmt"
)

type result struct {
	Path     string  `json:"path"`
	Bytes    int     `json:"bytes"`
	Families int     `json:"families"`
	Us       float64 `json:"us"`
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
		us := float64(best.Nanoseconds()) / float64(*repeat) / 1e3
		if err := out.Encode(result{path, len(page), families, us}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
