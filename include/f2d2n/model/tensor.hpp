// f2d2n/model/tensor.hpp: the matrix types kernels work on. A batch is row-major: one sample a row.
#pragma once

#include <Eigen/Core>

namespace f2d2n {

/// A batch of samples (rows) by features (columns), row-major, owning its memory.
template <class Scalar>
using matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A column vector owning its memory (flat parameter and gradient buffers).
template <class Scalar>
using vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// A writable view of a row-major matrix or of a block of consecutive rows of one.
template <class Scalar>
using matrix_ref = Eigen::Ref<matrix<Scalar>>;

/// A read-only view of a row-major matrix or of a block of consecutive rows of one.
template <class Scalar>
using const_matrix_ref = Eigen::Ref<const matrix<Scalar>>;

/// A row-major matrix over memory owned elsewhere (a layer's slice of the flat parameter buffer).
template <class Scalar>
using matrix_map = Eigen::Map<matrix<Scalar>>;

template <class Scalar>
using const_matrix_map = Eigen::Map<const matrix<Scalar>>;

}  // namespace f2d2n
