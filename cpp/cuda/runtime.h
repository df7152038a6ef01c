// Facts about the CUDA runtime and devices, for HAS_CUDA and show_config().
#pragma once

#include <string>

namespace metarec {
namespace cuda {

// Number of usable devices; 0 (never an exception) when there is no driver or
// no device, so a CPU-only machine can import the module and ask.
int device_count();
// "" when unknown.
std::string device_name(int device);
// CUDART_VERSION of the build, and the driver's version (0 without a driver).
int runtime_version();
int driver_version();

}  // namespace cuda
}  // namespace metarec
