// Package vmapi is the harness's client for VictoriaMetrics' HTTP API:
// health, force-flush, instant queries and the raw export it compares the
// fleet's ledger against.
package vmapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Client talks to one VictoriaMetrics. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// New returns a client for base, e.g. http://127.0.0.1:8428.
func New(base string) *Client {
	return &Client{base: base, hc: &http.Client{Timeout: 10 * time.Minute}}
}

// Base is the base URL.
func (c *Client) Base() string { return c.base }

// Healthy reports whether /health answers 200.
func (c *Client) Healthy(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/health", nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (c *Client) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("build request %s: %w", path, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return nil, fmt.Errorf("get %s: status %d: %s", path, resp.StatusCode, b)
	}
	return resp, nil
}

// Flush makes recently written samples visible to queries and exports.
func (c *Client) Flush(ctx context.Context) error {
	resp, err := c.get(ctx, "/internal/force_flush", nil)
	if err != nil {
		return fmt.Errorf("force flush: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}

// Series is one exported series (values are not decoded: the harness
// checks identity and timestamps).
type Series struct {
	Metric     map[string]string `json:"metric"`
	Timestamps []int64           `json:"timestamps"`
}

// Export flushes, then streams every series matching match to fn.
func (c *Client) Export(ctx context.Context, match string, fn func(Series)) error {
	if err := c.Flush(ctx); err != nil {
		return err
	}
	q := url.Values{"match[]": {match}, "start": {"0"}, "reduce_mem_usage": {"1"}}
	resp, err := c.get(ctx, "/api/v1/export", q)
	if err != nil {
		return fmt.Errorf("export %s: %w", match, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 512<<20)
	for sc.Scan() {
		var s Series
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return fmt.Errorf("export %s: decode line: %w", match, err)
		}
		fn(s)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("export %s: %w", match, err)
	}
	return nil
}

// Sample is one element of an instant-query vector.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Query runs an instant query at now, bypassing VictoriaMetrics' cache.
func (c *Client) Query(ctx context.Context, query string) ([]Sample, error) {
	return c.QueryAt(ctx, query, time.Time{})
}

// QueryAt runs an instant query at t (now when zero).
func (c *Client) QueryAt(ctx context.Context, query string, t time.Time) ([]Sample, error) {
	q := url.Values{"query": {query}, "nocache": {"1"}}
	if !t.IsZero() {
		q.Set("time", strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64))
	}
	resp, err := c.get(ctx, "/api/v1/query", q)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", query, err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("query %s: decode: %w", query, err)
	}
	res := make([]Sample, 0, len(out.Data.Result))
	for _, r := range out.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			continue
		}
		res = append(res, Sample{Metric: r.Metric, Value: v})
	}
	return res, nil
}
