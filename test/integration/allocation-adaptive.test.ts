// What a request allocates under 'adaptive', as V8 compiles it: test/helpers/allocation-cases.ts.
import { defineAllocationTests } from '../helpers/allocation-cases.js';

defineAllocationTests('adaptive', 'compiled');
