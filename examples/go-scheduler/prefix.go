package main

// The precise prefix-cache scorer: the data layer's MatchPrefix answers, per endpoint, how
// many of the prompt's leading KV blocks it holds; the score is that share of the prompt's
// full blocks (0..1), as upstream's precise prefix-cache scorer normalises it.

import (
	"context"
	"time"

	datalayerv1 "github.com/llm-d-datalayer/datalayer/gen/go/datalayer/v1"
)

// PrefixAnswer is one MatchPrefix reply: matched blocks by endpoint, and the prompt's blocks.
type PrefixAnswer struct {
	Matched map[string]uint32
	Total   uint32
}

// StandInTokens is the mock pod's stand-in tokenizer: one token per UTF-8 byte. A real
// scheduler runs the model's tokenizer here; the data layer only sees token IDs either way.
func StandInTokens(prompt string) []uint32 {
	tokens := make([]uint32, len(prompt))
	for i := 0; i < len(prompt); i++ {
		tokens[i] = uint32(prompt[i])
	}
	return tokens
}

// PrefixScores is matched / total per endpoint; one MatchPrefix did not list holds none.
func PrefixScores(endpoints []*datalayerv1.Endpoint, answer PrefixAnswer) []float64 {
	scores := make([]float64, len(endpoints))
	if answer.Total == 0 {
		return scores
	}
	for i, ep := range endpoints {
		score := float64(answer.Matched[ep.GetName()]) / float64(answer.Total)
		if score > 1 {
			score = 1
		}
		scores[i] = score
	}
	return scores
}

// MatchPrefix asks the data layer which endpoints hold the prompt's leading blocks.
func MatchPrefix(ctx context.Context, client datalayerv1.DataLayerClient, model string, tokens []uint32, selector string) (PrefixAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := client.MatchPrefix(ctx, &datalayerv1.MatchPrefixRequest{Model: model, TokenIds: tokens, Selector: selector})
	if err != nil {
		return PrefixAnswer{}, err
	}
	answer := PrefixAnswer{Matched: map[string]uint32{}, Total: reply.GetTotalBlocks()}
	for _, m := range reply.GetMatches() {
		answer.Matched[m.GetEndpoint()] = m.GetMatchedBlocks()
	}
	return answer, nil
}
