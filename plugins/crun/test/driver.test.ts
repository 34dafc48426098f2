import factory from '../src/index.js';
import { runOciCliDriverSuite } from '@berth/core/test-support/driver-suite.js';

runOciCliDriverSuite('crun', factory);
