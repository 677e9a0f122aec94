// The ownership model's property (model_test.cpp) on a 52-bit machine: RAM, MMIO and the table
// pool above 2^51, guests at IPAs above 2^51, a CPU with a 52-bit PA and FEAT_LPA2
// (BasicSmallEnv<true>). Every step checked as there: the model, the invariants, the reference
// MMU with the CPU's 52-bit implementation choices, and nothing changed by a failed step.
#define PTGUARD_MODEL_PA52 1
#include "model_test.cpp"
