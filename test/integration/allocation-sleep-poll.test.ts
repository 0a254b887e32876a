// What a request allocates under 'sleep-poll', as V8 compiles it, past 3 TiB.
// The file's name says which: test/helpers/allocation-cases.ts.
import { defineAllocationTests } from '../helpers/allocation-cases.js';

defineAllocationTests(import.meta.url);
