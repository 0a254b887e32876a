// What a request allocates under 'event', as V8 compiles it: test/helpers/allocation-cases.ts.
import { defineAllocationTests } from '../helpers/allocation-cases.js';

defineAllocationTests('event', 'compiled');
