// The Python module for the GPU kernels (colbert._ext_cuda ahead of time,
// colbert_tap_cuda when JIT-built).  Built only when torch has CUDA.
#include <torch/extension.h>

#include "build_info.h"

// What setup.py built for (TORCH_CUDA_ARCH_LIST with '_' for ';', "visible" when
// torch took the visible GPUs'); empty in a JIT build, which targets the visible GPUs.
#ifdef COLBERT_TAP_CUDA_ARCHS
#define COLBERT_TAP_CUDA_ARCHS_STR COLBERT_TAP_STR(COLBERT_TAP_CUDA_ARCHS)
#else
#define COLBERT_TAP_CUDA_ARCHS_STR ""
#endif

namespace colbert_tap {
at::Tensor decompress_rows_cuda(const at::Tensor& codes, const at::Tensor& residuals,
                                const at::Tensor& centroids, const at::Tensor& bucket_weights,
                                int64_t nbits);
at::Tensor packbits_cuda(const at::Tensor& bits);
}  // namespace colbert_tap

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "colbert-tap CUDA kernels; see colbert/search/extensions.py";
  m.attr("SOURCE_HASH") = COLBERT_TAP_SOURCE_HASH_STR;
  m.attr("TORCH_VERSION") = COLBERT_TAP_TORCH_VERSION_STR;
  m.attr("CUDA_ARCHS") = COLBERT_TAP_CUDA_ARCHS_STR;
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("decompress_rows", &colbert_tap::decompress_rows_cuda, py::arg("codes"),
        py::arg("residuals"), py::arg("centroids"), py::arg("bucket_weights"), py::arg("nbits"),
        nogil);
  m.def("packbits", &colbert_tap::packbits_cuda, py::arg("bits"), nogil);
}
