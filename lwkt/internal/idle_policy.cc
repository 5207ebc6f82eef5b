// The adaptive idle spin's estimator; see idle_policy.h.
#include "lwkt/internal/idle_policy.h"

#include <algorithm>

namespace lwkt::internal {
namespace {

int bucket_of(std::uint64_t gap) {
  if (gap == 0) return 0;
  const int log2 = 63 - __builtin_clzll(gap);
  return std::clamp(log2 - idle_estimator::kShift, 0, idle_estimator::kBuckets - 1);
}

// A gap of class k is taken as the middle of its class.
double middle_of(int k) { return 1.5 * static_cast<double>(std::uint64_t{1} << (k + idle_estimator::kShift)); }

}  // namespace

void idle_estimator::init(std::uint64_t cap_ticks, double budget, double ticks_per_ns,
                          std::uint64_t now) {
  _cap = cap_ticks;
  _budget = budget;
  _window = std::min<std::uint64_t>(
      _cap, static_cast<std::uint64_t>(static_cast<double>(kFirstWindowNs) * ticks_per_ns));
  _epoch_start = now;
}

void idle_estimator::note(std::uint64_t gap, std::uint64_t now) {
  _hist[bucket_of(gap)] += 1.0;
  if (++_epoch_gaps < kEvery) return;
  const double elapsed = static_cast<double>(now > _epoch_start ? now - _epoch_start : 1);
  _window = choose(static_cast<double>(_epoch_gaps) / elapsed);
  for (double& h : _hist) h *= 0.5;  // older gaps count half at each step
  _epoch_start = now;
  _epoch_gaps = 0;
}

std::uint64_t idle_estimator::choose(double rate) const {
  double total = 0;
  for (double h : _hist) total += h;
  if (total <= 0) return _window;
  std::uint64_t best = 0;
  double best_cover = -1;
  // Candidates: 0 (park at once) and each class's upper bound, up to the cap.
  for (int c = -1; c < kBuckets; ++c) {
    const double w = c < 0 ? 0.0 : static_cast<double>(std::uint64_t{1} << (c + kShift + 1));
    if (w > static_cast<double>(_cap)) break;
    double cover = 0, spin = 0;
    for (int k = 0; k < kBuckets; ++k) {
      const double p = _hist[k] / total;
      const double g = middle_of(k);
      if (k <= c) cover += p;  // the whole class ends below w
      spin += p * std::min(g, w);
    }
    if (rate * spin <= _budget && cover > best_cover + 1e-9) {
      best_cover = cover;
      best = static_cast<std::uint64_t>(w);
    }
  }
  return best;
}

}  // namespace lwkt::internal
