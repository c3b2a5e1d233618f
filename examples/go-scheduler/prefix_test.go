package main

import (
	"testing"

	datalayerv1 "github.com/llm-d-datalayer/datalayer/gen/go/datalayer/v1"
)

func TestStandInTokensAreUTF8Bytes(t *testing.T) {
	got := StandInTokens("hé")
	want := []uint32{104, 195, 169}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("StandInTokens = %v, want %v", got, want)
	}
}

func TestPrefixScorerDecidesWhenLoadIsEqual(t *testing.T) {
	eps := []*datalayerv1.Endpoint{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	answer := PrefixAnswer{Matched: map[string]uint32{"b": 3, "c": 1}, Total: 4}
	scores := PrefixScores(eps, answer)
	if scores[0] != 0 || scores[1] != 0.75 || scores[2] != 0.25 {
		t.Fatalf("PrefixScores = %v", scores)
	}
	cfg := DefaultConfig()
	cfg.Prompt = "x"
	d := PickWithPrefix(eps, cfg, &answer)
	if d.Pick != "b" {
		t.Fatalf("pick = %q, want b", d.Pick)
	}
	lines := Format(1, d, cfg)
	if want := "prefix=0.750"; len(lines) < 2 || lines[1][len(lines[1])-len(want):] != want {
		t.Fatalf("line %q does not end with %q", lines[1], want)
	}
	if none := PrefixScores(eps, PrefixAnswer{}); none[0] != 0 || none[1] != 0 {
		t.Fatalf("an empty prompt scores %v", none)
	}
}
