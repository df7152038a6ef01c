// Placeholder until the metrics kernels land.
namespace metarec {}
