// What a request allocates under 'sleep-poll', as V8 compiles it: test/helpers/allocation-cases.ts.
import { defineAllocationTests } from '../helpers/allocation-cases.js';

defineAllocationTests('sleep-poll', 'compiled');
