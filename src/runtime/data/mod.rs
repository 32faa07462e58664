//! Data sets: readers for the formats nnc trains from, splits, batches and
//! augmentation. (Being written.)
