// Compile-time selection of adapters by capability: FilterAdapters<Pred,
// A...> is ::testing::Types<the A whose Driver satisfies Pred>. A suite whose
// selection is empty does not compile: add an adapter with that capability
// (or drop the suite) rather than have cases silently absent.
//
// Thread-safety: compile-time only.

#ifndef VMI_TESTS_CONFORMANCE_TYPE_FILTER_H_
#define VMI_TESTS_CONFORMANCE_TYPE_FILTER_H_

#include <type_traits>

#include "gtest/gtest.h"

namespace vmi::conformance {

template <typename... T>
struct TypeList {};

template <typename List, typename T>
struct Append;
template <typename... T, typename U>
struct Append<TypeList<T...>, U> {
  using type = TypeList<T..., U>;
};

template <template <typename> class Pred, typename Acc, typename... A>
struct FilterImpl {
  using type = Acc;
};
template <template <typename> class Pred, typename Acc, typename First, typename... Rest>
struct FilterImpl<Pred, Acc, First, Rest...> {
  using next = std::conditional_t<Pred<typename First::Driver>::value,
                                  typename Append<Acc, First>::type, Acc>;
  using type = typename FilterImpl<Pred, next, Rest...>::type;
};

template <typename List>
struct ToGtest;
template <typename... T>
struct ToGtest<TypeList<T...>> {
  using type = ::testing::Types<T...>;
};

template <template <typename> class Pred, typename... A>
using FilterAdapters = typename ToGtest<typename FilterImpl<Pred, TypeList<>, A...>::type>::type;

// Names instantiations after the adapter ("Sim", "Dump", "Xen", ...).
struct AdapterName {
  template <typename A>
  static std::string GetName(int) {
    return A::Name();
  }
};

}  // namespace vmi::conformance

#endif  // VMI_TESTS_CONFORMANCE_TYPE_FILTER_H_
