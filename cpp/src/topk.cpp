// Placeholder until the topk kernels land.
namespace metarec {}
