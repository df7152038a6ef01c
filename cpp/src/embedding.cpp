// Placeholder until the embedding kernels land.
namespace metarec {}
